//! The plain-text tables `lbctl` and `bgpctl` print: a header row and rows of cells, each
//! column padded to its widest cell, two spaces apart, no trailing blanks.
//!
//! ```
//! use spanlb_control::table::{Align, Table};
//! let mut t = Table::new(&[("NAME", Align::Left), ("N", Align::Right)]);
//! t.row(vec!["web".into(), "12".into()]);
//! assert_eq!(t.render(""), "NAME   N\nweb   12\n");
//! ```

/// How a column's cells sit in its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart; no trailing blanks.
#[derive(Debug, Clone)]
pub struct Table {
    head: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(head: &[(&'static str, Align)]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (cells beyond the headings are not shown).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, every line starting with `indent` and ending with a newline.
    pub fn render(&self, indent: &str) -> String {
        let n = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|(h, _)| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::from(indent);
            for (i, c) in cells.iter().enumerate().take(n) {
                let pad = width[i].saturating_sub(c.chars().count());
                let last = i + 1 == n;
                if self.head[i].1 == Align::Right {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    if !last {
                        out.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                if !last {
                    out.push_str("  ");
                }
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            out
        };
        let mut out = line(self.head.iter().map(|(h, _)| *h).collect());
        for r in &self.rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Align::{Left as L, Right as R};
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&[("NAME", L), ("N", R), ("NOTE", L)]);
        t.row(vec!["a".into(), "1234".into(), "".into()]);
        t.row(vec!["longer".into(), "5".into(), "x".into()]);
        assert_eq!(
            t.render("  "),
            "  NAME       N  NOTE\n  a       1234\n  longer     5  x\n"
        );
    }
}
