//! What the commands print: aligned tables of the API's JSON objects, and lines
//! on stdout whose write errors (a closed pipe, as with `| head`) end the command
//! quietly instead of panicking as `println!` would.

use std::io::{self, Write};

use serde_json::{Map, Value};

/// Spaces between table columns.
const COLUMN_GAP: usize = 2;

/// The longest cell printed in a table; longer values are cut with `…`.
const CELL_CHARS_MAX: usize = 60;

/// Writes `line` and a newline to stdout.
pub fn line(line: impl AsRef<str>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(line.as_ref().as_bytes())?;
    out.write_all(b"\n")
}

/// Writes `text` to stdout as it is.
pub fn text(text: &str) -> io::Result<()> {
    io::stdout().lock().write_all(text.as_bytes())
}

/// Writes `value` as pretty JSON to stdout.
pub fn json(value: &Value) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    line(text)
}

/// A JSON value as a table cell: strings without quotes, arrays as `1,2,3`,
/// missing or null as `-`.
pub fn cell(value: Option<&Value>) -> String {
    let text = match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    };
    if text.chars().count() > CELL_CHARS_MAX {
        let cut: String = text.chars().take(CELL_CHARS_MAX - 1).collect();
        return format!("{cut}…");
    }
    text
}

/// Renders rows as columns padded to their widest cell; the first row is the
/// header. Every line ends without trailing spaces.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count()) + COLUMN_GAP;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Prints a table of JSON objects: one row each, one column per field that holds
/// a scalar or an array of scalars in any of them, `first` fields leading in that
/// order, then the others by name. Fields the API adds later show up by
/// themselves.
pub fn objects(items: &[Value], first: &[&str]) -> io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let mut columns: Vec<String> = first.iter().map(|s| (*s).to_owned()).collect();
    let mut others: Vec<String> = items
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|object| object.iter())
        .filter(|(name, value)| is_flat(value) && !columns.contains(name))
        .map(|(name, _)| name.clone())
        .collect();
    others.sort();
    others.dedup();
    columns.extend(others);
    let empty = Map::new();
    let mut rows = vec![columns.iter().map(|c| c.to_uppercase()).collect()];
    for item in items {
        let object = item.as_object().unwrap_or(&empty);
        rows.push(columns.iter().map(|c| cell(object.get(c))).collect());
    }
    text(&render_table(&rows))
}

/// Prints one object (a topic, a queue): `name` first, then its other flat
/// fields as `field: value` lines by name, then each list of objects (the
/// partitions) as a table whose `first` columns lead.
pub fn describe(item: &Value, first: &[&str]) -> anyhow::Result<()> {
    let Some(fields) = item.as_object() else {
        anyhow::bail!("the broker's answer is not an object: {item}");
    };
    let mut text = String::new();
    if let Some(name) = fields.get("name") {
        text.push_str(&format!("name: {}\n", cell(Some(name))));
    }
    for (field, value) in fields {
        if field != "name" && !is_table(value) {
            text.push_str(&format!("{field}: {}\n", cell(Some(value))));
        }
    }
    self::text(&text)?;
    for (field, value) in fields {
        if let Value::Array(items) = value
            && is_table(value)
        {
            self::text(&format!("\n{field}:\n"))?;
            objects(items, first)?;
        }
    }
    Ok(())
}

/// A non-empty list of objects: shown as a table.
fn is_table(value: &Value) -> bool {
    matches!(value, Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object))
}

/// A scalar, or an array of scalars: what fits in a cell.
fn is_flat(value: &Value) -> bool {
    match value {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().all(|v| !v.is_object() && !v.is_array()),
        _ => true,
    }
}

/// Prints the list under `field` of an answer (`{"topics": [...]}`) as a table;
/// says on stderr when it is empty.
pub fn list(answer: &Value, field: &str, first: &[&str]) -> anyhow::Result<()> {
    let items = array(answer, field)?;
    if items.is_empty() {
        eprintln!("(no {})", field.replace('_', " "));
    }
    Ok(objects(items, first)?)
}

/// The array under `field` of an answer (`{"topics": [...]}`), or an error
/// saying the answer lacks it.
pub fn array<'a>(answer: &'a Value, field: &str) -> anyhow::Result<&'a [Value]> {
    answer
        .get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| anyhow::anyhow!("the broker's answer has no {field:?} list: {answer}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let rows = vec![
            vec!["NAME".to_owned(), "PARTITIONS".to_owned()],
            vec!["orders".to_owned(), "3".to_owned()],
            vec!["x".to_owned(), "12".to_owned()],
        ];
        assert_eq!(
            render_table(&rows),
            "NAME    PARTITIONS\norders  3\nx       12\n"
        );
    }

    #[test]
    fn cells_show_json_plainly() {
        assert_eq!(cell(Some(&json!("a"))), "a");
        assert_eq!(cell(Some(&json!([1, 2]))), "1,2");
        assert_eq!(cell(Some(&json!(null))), "-");
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&json!(true))), "true");
        assert_eq!(cell(Some(&json!("y".repeat(100)))).chars().count(), 60);
    }
}
