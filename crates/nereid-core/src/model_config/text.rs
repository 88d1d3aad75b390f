//! Protobuf text format as Triton writes it. Triton's configs omit the colon before lists
//! (`input [ { ... } ]`, `dims [ 1 ]`), which the spec allows only for message lists and
//! prost-reflect rejects; this pass adds the colon back.

/// Returns `text` with a `:` inserted after each field name directly followed by `[`, and the
/// offsets in `text` where one was inserted (ascending). Lines never move.
pub(super) fn add_list_colons(text: &str) -> (String, Vec<usize>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut inserted = Vec::new();
    // Open `{`, `<` and `[`: inside `[...]` an identifier is a value (an enum), not a field name.
    let mut open: Vec<u8> = Vec::new();
    // End offset of the previous token when it was an identifier in field-name position.
    let mut field_name_end: Option<usize> = None;
    let mut after_colon = false;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
            }
            b'[' => {
                if let Some(end) = field_name_end {
                    out.push_str(&text[copied..end]);
                    out.push(':');
                    copied = end;
                    inserted.push(end);
                }
                open.push(c);
                i += 1;
            }
            b'{' | b'<' => {
                open.push(c);
                i += 1;
            }
            b']' | b'}' | b'>' => {
                open.pop();
                i += 1;
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let is_field_name = !after_colon && open.last() != Some(&b'[');
                field_name_end = is_field_name.then_some(i);
                after_colon = false;
                continue;
            }
            _ => i += 1,
        }
        after_colon = c == b':';
        field_name_end = None;
    }
    out.push_str(&text[copied..]);
    (out, inserted)
}

/// Maps an offset in the rewritten text back to the original text.
pub(super) fn original_offset(offset: usize, inserted: &[usize]) -> usize {
    let before = inserted.iter().enumerate().filter(|&(n, &at)| at + n < offset).count();
    offset - before
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(text: &str) -> String {
        add_list_colons(text).0
    }

    #[test]
    fn adds_colon_before_lists_only_after_field_names() {
        assert_eq!(fixed("input [ { dims [ 1 ] } ]"), "input: [ { dims: [ 1 ] } ]");
        assert_eq!(fixed("dims: [ 1 ]"), "dims: [ 1 ]");
        assert_eq!(fixed("kind: [ A, B ]"), "kind: [ A, B ]");
        assert_eq!(fixed("x [ A, B ] y [C]"), "x: [ A, B ] y: [C]");
        assert_eq!(fixed("x: A\n[ext] { }"), "x: A\n[ext] { }");
    }

    #[test]
    fn leaves_strings_and_comments_alone() {
        let text = "# dims [ 1 ]\nname: \"a [ b\" label: 'it\\'s [' dims [1]";
        assert_eq!(fixed(text), "# dims [ 1 ]\nname: \"a [ b\" label: 'it\\'s [' dims: [1]");
    }

    #[test]
    fn maps_offsets_back_to_the_original() {
        let text = "a [1]\nb [2]";
        let (new, inserted) = add_list_colons(text);
        assert_eq!(inserted, vec![1, 7]);
        let b_in_new = new.find('b').unwrap();
        assert_eq!(original_offset(b_in_new, &inserted), 6);
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 4));
    }
}
