//! Plain text tables for human output.

/// A table with a header row; columns are padded to their widest cell.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
    /// Rows whose last cell spans the columns after it: it does not widen
    /// the column it starts in.
    spanning: Vec<bool>,
}

impl Table {
    /// A table with these column titles.
    pub(crate) fn new(header: &[&str]) -> Self {
        Self { rows: vec![header.iter().map(|h| h.to_string()).collect()], spanning: vec![false] }
    }

    /// Add a row (one cell per column).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
        self.spanning.push(false);
    }

    /// Add a row of fewer cells than columns whose last cell runs on over
    /// the remaining columns (a note about the row above, say) without
    /// widening the column it starts in.
    pub(crate) fn spanning_row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
        self.spanning.push(true);
    }

    /// The table as text, one line per row, the last column not padded.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let sized =
                    self.rows.iter().zip(&self.spanning).filter(|(r, span)| !(**span && c + 1 >= r.len()));
                sized.filter_map(|(r, _)| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Cut `text` to at most `max` characters, marking the cut with `…`, and
/// flatten newlines so a cell stays on one line.
pub(crate) fn cell(text: &str, max: usize) -> String {
    let flat: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide cell  x\n");
    }

    #[test]
    fn a_spanning_cell_does_not_widen_its_column() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec!["1".into(), "a".into(), "waiting".into()]);
        t.spanning_row(vec!["22".into(), "a long note over the columns".into()]);
        assert_eq!(t.render(), "ID  NAME  STATE\n1   a     waiting\n22  a long note over the columns\n");
    }

    #[test]
    fn cuts_long_cells() {
        assert_eq!(cell("abcdef", 4), "abc…");
        assert_eq!(cell("a\nb", 10), "a b");
    }
}
