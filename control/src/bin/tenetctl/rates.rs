//! `stats --watch`'s rates: the API gives counters since start, which tell little about
//! what is happening now; two successive answers and the time between them do.

use serde_json::Value;

use crate::render::text;
use crate::table::{Align, Table};

/// Per second over one interval; `None` where it cannot be known: the counter is new
/// (a port attached since) or went back (tenetd restarted, the port attached again).
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// The interval, in seconds.
    pub seconds: f64,
    /// Per port, in the later answer's order.
    pub ports: Vec<PortRates>,
    /// Per worker core.
    pub cores: Vec<CoreRates>,
    /// Packets dropped per second by reason, for the reasons that dropped any.
    pub drops: Vec<(String, f64)>,
    /// MACs the control plane holds now (not a rate).
    pub learned_macs: Value,
}

/// A port's rates.
#[derive(Debug, Clone, PartialEq)]
pub struct PortRates {
    pub name: String,
    pub rx_packets: Option<f64>,
    pub tx_packets: Option<f64>,
    pub rx_bits: Option<f64>,
    pub tx_bits: Option<f64>,
    /// Received packets the device dropped for want of room (`rx_missed`).
    pub rx_missed: Option<f64>,
}

/// A worker core's rates.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreRates {
    pub core: Value,
    pub rx_packets: Option<f64>,
    pub tx_packets: Option<f64>,
    /// Packets it dropped, every reason together.
    pub drops: Option<f64>,
}

/// The rates between two `GET /v1/stats` answers taken `seconds` apart. Ports are paired
/// by name and cores by number, since either list may change between the answers.
pub fn rates(before: &Value, after: &Value, seconds: f64) -> Rates {
    let per = |before: Option<u64>, after: Option<u64>| -> Option<f64> {
        let (before, after) = (before?, after?);
        (after >= before && seconds > 0.0).then(|| (after - before) as f64 / seconds)
    };
    let counter = |item: Option<&Value>, key: &str| item.and_then(|i| i[key].as_u64());
    let list = |body: &Value, key: &str| body[key].as_array().cloned().unwrap_or_default();
    let ports = list(after, "ports")
        .iter()
        .map(|p| {
            let was = before["ports"]
                .as_array()
                .and_then(|l| l.iter().find(|q| q["name"] == p["name"]));
            let rate = |key: &str| per(counter(was, key), counter(Some(p), key));
            PortRates {
                name: text(&p["name"]),
                rx_packets: rate("rx_packets"),
                tx_packets: rate("tx_packets"),
                rx_bits: rate("rx_bytes").map(|b| b * 8.0),
                tx_bits: rate("tx_bytes").map(|b| b * 8.0),
                rx_missed: rate("rx_missed"),
            }
        })
        .collect();
    let dropped = |core: Option<&Value>| {
        core.and_then(|c| c["drops"].as_object())
            .map(|d| d.values().filter_map(Value::as_u64).sum::<u64>())
    };
    let cores = list(after, "cores")
        .iter()
        .map(|c| {
            let was = before["cores"]
                .as_array()
                .and_then(|l| l.iter().find(|d| d["core"] == c["core"]));
            CoreRates {
                core: c["core"].clone(),
                rx_packets: per(counter(was, "rx_packets"), counter(Some(c), "rx_packets")),
                tx_packets: per(counter(was, "tx_packets"), counter(Some(c), "tx_packets")),
                drops: per(dropped(was), dropped(Some(c))),
            }
        })
        .collect();
    let drops = after["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(reason, n)| {
            let rate = per(before["drops"][reason].as_u64(), n.as_u64())?;
            (rate > 0.0).then(|| (reason.clone(), rate))
        })
        .collect();
    Rates {
        seconds,
        ports,
        cores,
        drops,
        learned_macs: after["control"]["learned_macs"].clone(),
    }
}

/// A rate in three significant digits with an SI prefix (`950`, `12.3k`, `1.00G`):
/// line-rate counts are too long to read at a glance.
pub fn si(rate: Option<f64>) -> String {
    let Some(mut v) = rate else {
        return "-".to_owned();
    };
    let mut prefix = 0;
    while v >= 999.5 && prefix < 4 {
        v /= 1000.0;
        prefix += 1;
    }
    let prefix_text = ["", "k", "M", "G", "T"][prefix];
    if prefix == 0 {
        format!("{v:.0}")
    } else if v < 9.995 {
        format!("{v:.2}{prefix_text}")
    } else if v < 99.95 {
        format!("{v:.1}{prefix_text}")
    } else {
        format!("{v:.0}{prefix_text}")
    }
}

/// One screen of `stats --watch`.
pub fn rates_text(r: &Rates) -> String {
    let mut ports = Table::new(&[
        ("port", Align::Left),
        ("rx pkt/s", Align::Right),
        ("tx pkt/s", Align::Right),
        ("rx bit/s", Align::Right),
        ("tx bit/s", Align::Right),
        ("missed/s", Align::Right),
    ]);
    for p in &r.ports {
        ports.row(vec![
            p.name.clone(),
            si(p.rx_packets),
            si(p.tx_packets),
            si(p.rx_bits),
            si(p.tx_bits),
            si(p.rx_missed),
        ]);
    }
    let mut out = format!("per second over the last {:.1} s\n\n", r.seconds);
    out.push_str(&ports.render());
    let mut cores = Table::new(&[
        ("core", Align::Right),
        ("rx pkt/s", Align::Right),
        ("tx pkt/s", Align::Right),
        ("drops/s", Align::Right),
    ]);
    for c in &r.cores {
        cores.row(vec![
            text(&c.core),
            si(c.rx_packets),
            si(c.tx_packets),
            si(c.drops),
        ]);
    }
    if !cores.is_empty() {
        out.push('\n');
        out.push_str(&cores.render());
    }
    let mut drops = Table::new(&[("drop", Align::Left), ("packets/s", Align::Right)]);
    for (reason, rate) in &r.drops {
        drops.row(vec![reason.clone(), si(Some(*rate))]);
    }
    if !drops.is_empty() {
        out.push('\n');
        out.push_str(&drops.render());
    }
    out.push_str(&format!("\nlearned MACs {}\n", text(&r.learned_macs)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn port(name: &str, rx: u64, tx: u64, rx_bytes: u64, tx_bytes: u64, missed: u64) -> Value {
        json!({"name": name, "rx_packets": rx, "tx_packets": tx, "rx_bytes": rx_bytes,
               "tx_bytes": tx_bytes, "rx_missed": missed})
    }

    #[test]
    fn rates_are_the_difference_over_the_time_between_answers() {
        let before = json!({
            "ports": [port("c1", 1_000, 2_000, 64_000, 128_000, 0),
                      port("up", 5_000_000, 10, 9_000_000_000, 1_000, 10)],
            "cores": [{"core": 1, "rx_packets": 100, "tx_packets": 100,
                       "drops": {"ttl": 1, "no-route": 0}}],
            "drops": {"ttl": 1, "no-route": 0, "tagged-on-access": 4},
            "control": {"learned_macs": 3},
        });
        // Two seconds later: `up` was attached again (counters back to near zero), `new`
        // appeared, core 2 started.
        let after = json!({
            "ports": [port("c1", 3_000, 2_000, 192_000, 128_000, 0),
                      port("up", 20, 10, 2_000, 1_000, 0),
                      port("new", 5, 5, 300, 300, 0)],
            "cores": [{"core": 1, "rx_packets": 2_100, "tx_packets": 1_100,
                       "drops": {"ttl": 5, "no-route": 2}},
                      {"core": 2, "rx_packets": 9, "tx_packets": 9, "drops": {}}],
            "drops": {"ttl": 5, "no-route": 2, "tagged-on-access": 4},
            "control": {"learned_macs": 5},
        });
        let r = rates(&before, &after, 2.0);
        assert_eq!(
            r.ports[0],
            PortRates {
                name: "c1".into(),
                rx_packets: Some(1_000.0),
                tx_packets: Some(0.0),
                rx_bits: Some(512_000.0),
                tx_bits: Some(0.0),
                rx_missed: Some(0.0),
            }
        );
        let unknown = |name: &str| PortRates {
            name: name.into(),
            rx_packets: None,
            tx_packets: None,
            rx_bits: None,
            tx_bits: None,
            rx_missed: None,
        };
        // Counters that went back or are new have no rate yet; the tx counter of `up`
        // that stood still has one.
        assert_eq!(
            r.ports[1],
            PortRates {
                tx_packets: Some(0.0),
                tx_bits: Some(0.0),
                ..unknown("up")
            }
        );
        assert_eq!(r.ports[2], unknown("new"));
        assert_eq!(
            r.cores,
            vec![
                CoreRates {
                    core: json!(1),
                    rx_packets: Some(1_000.0),
                    tx_packets: Some(500.0),
                    drops: Some(3.0),
                },
                CoreRates {
                    core: json!(2),
                    rx_packets: None,
                    tx_packets: None,
                    drops: None,
                },
            ]
        );
        assert_eq!(
            r.drops,
            vec![("no-route".to_owned(), 1.0), ("ttl".to_owned(), 2.0)]
        );
        assert_eq!(r.learned_macs, json!(5));
        assert_eq!(
            rates_text(&r),
            "\
per second over the last 2.0 s

port  rx pkt/s  tx pkt/s  rx bit/s  tx bit/s  missed/s
c1       1.00k         0      512k         0         0
up           -         0         -         0         -
new          -         -         -         -         -

core  rx pkt/s  tx pkt/s  drops/s
   1     1.00k       500        3
   2         -         -        -

drop      packets/s
no-route          1
ttl               2

learned MACs 5
"
        );
    }

    #[test]
    fn rates_read_in_three_digits() {
        let cases = [
            (None, "-"),
            (Some(0.0), "0"),
            (Some(0.4), "0"),
            (Some(999.0), "999"),
            (Some(999.6), "1.00k"),
            (Some(12_345.0), "12.3k"),
            (Some(123_456.0), "123k"),
            (Some(14_880_952.0), "14.9M"),
            (Some(100e9), "100G"),
            (Some(2.5e15), "2500T"),
        ];
        for (rate, shown) in cases {
            assert_eq!(si(rate), shown, "{rate:?}");
        }
    }
}
