//! JSON lines, the format of every record file a generated report is rendered from.

use serde::de::DeserializeOwned;

/// Parses every non-empty line of `text` as one `T`; a line that does not parse is an error
/// naming its (1-based) number.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}
