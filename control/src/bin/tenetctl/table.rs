//! Column-aligned text: every table tenetctl prints, and its key/value blocks, go
//! through [`Table`]. Widths come from the cells, already turned into text, because a
//! width in a format string is silently ignored by `serde_json::Value`'s `Display` and
//! because a fixed width lets one long name push every later column out of line.

/// Which side of its column a cell keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Names and other words.
    Left,
    /// Numbers, so that their digits line up.
    Right,
}

enum Line {
    Row(Vec<String>),
    /// Text under a row that belongs to no column (a down port's reason).
    Note(String),
}

/// A table under construction.
pub struct Table {
    headers: Option<Vec<String>>,
    aligns: Vec<Align>,
    lines: Vec<Line>,
}

/// Between two columns.
const GAP: &str = "  ";

impl Table {
    /// A table whose first line names its columns.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            headers: Some(columns.iter().map(|(h, _)| (*h).to_owned()).collect()),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            lines: Vec::new(),
        }
    }

    /// A table without a header line: a key/value block.
    pub fn plain(aligns: &[Align]) -> Self {
        Self {
            headers: None,
            aligns: aligns.to_vec(),
            lines: Vec::new(),
        }
    }

    /// Adds a row of one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        // A miscounted row is a mistake in tenetctl itself; every table has a golden test.
        assert_eq!(cells.len(), self.aligns.len(), "cells of a row: {cells:?}");
        self.lines.push(Line::Row(cells));
    }

    /// Adds a line under the last row, indented, outside the columns.
    pub fn note(&mut self, text: String) {
        self.lines.push(Line::Note(text));
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The text, one line per row, with no trailing blanks.
    pub fn render(&self) -> String {
        let rows = || {
            self.headers
                .iter()
                .chain(self.lines.iter().filter_map(|l| match l {
                    Line::Row(cells) => Some(cells),
                    Line::Note(_) => None,
                }))
        };
        let mut widths = vec![0; self.aligns.len()];
        for cells in rows() {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line_of = |cells: &[String]| {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                let pad = " ".repeat(widths[i] - cell.chars().count());
                match self.aligns[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            line.truncate(line.trim_end().len());
            line.push('\n');
            line
        };
        let mut out = String::new();
        if let Some(headers) = &self.headers {
            out.push_str(&line_of(headers));
        }
        for line in &self.lines {
            match line {
                Line::Row(cells) => out.push_str(&line_of(cells)),
                Line::Note(text) => {
                    out.push_str("  ");
                    out.push_str(text);
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_the_widest_cell_and_numbers_keep_right() {
        let mut t = Table::new(&[
            ("name", Align::Left),
            ("rx", Align::Right),
            ("note", Align::Left),
        ]);
        t.row(vec!["a-rather-long-name".into(), "7".into(), "x".into()]);
        t.row(vec!["b".into(), "123456789".into(), String::new()]);
        t.note("why b is down".into());
        assert_eq!(
            t.render(),
            "name                       rx  note\n\
             a-rather-long-name          7  x\n\
             b                   123456789\n  \
             why b is down\n"
        );
    }

    #[test]
    fn a_plain_table_has_no_header() {
        let mut t = Table::plain(&[Align::Left, Align::Left]);
        t.row(vec!["id".into(), "100".into()]);
        t.row(vec!["gateway_on".into(), "a".into()]);
        assert_eq!(t.render(), "id          100\ngateway_on  a\n");
        assert!(Table::plain(&[Align::Left]).render().is_empty());
    }
}
