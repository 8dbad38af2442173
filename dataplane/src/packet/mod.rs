//! Zero-copy views of the headers tenet reads and writes, smoltcp style: a checked
//! constructor on untrusted input, after which no accessor can panic; unchecked
//! construction when emitting into a buffer already sized; owned `Repr`s where a value
//! is needed.

pub mod frame;
