//! Tables as the CLI prints them: columns sized to their content (comfy-table), no
//! borders, numbers aligned right, so a long step name, a workflow called
//! `code-change-gated` or an owner `implementer#0@worker-2` never breaks the layout.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};

/// A table with `header`; the columns whose index is in `right` are aligned right.
pub(crate) fn new(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// The table's lines, indented by `indent` spaces, without trailing blanks.
pub(crate) fn render(t: &Table, indent: usize) -> String {
    let pad = " ".repeat(indent);
    t.lines()
        .map(|l| format!("{pad}{}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_longest_cell_and_numbers_align_right() {
        let mut t = new(&["STEP", "OWNER", "ATTEMPTS"], &[2]);
        t.add_row(vec!["implement", "implementer#0@worker-2", "1"]);
        t.add_row(vec!["code-change/implement", "-", "12"]);
        let text = render(&t, 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // Every row's second column starts where the header's does.
        let at = lines[0].find("OWNER").unwrap();
        assert_eq!(lines[1].find("implementer#0@worker-2"), Some(at), "{text}");
        assert!(lines[2][at..].starts_with("- "), "{text}");
        // Right-aligned numbers end in the same column.
        assert_eq!(lines[1].len(), lines[2].len(), "{text}");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("  ") && !l.ends_with(' '))
        );
    }
}
