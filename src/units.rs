//! Quantities as operators write them: byte sizes (`16MiB`, `512KiB`, `1048576`), parsed and shown
//! one way for flags and policy files alike.

/// A byte size as written by an operator: plain bytes (`1048576`) or with a binary unit (`512KiB`,
/// `16MiB`, `1GiB`, case-insensitive, space allowed).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("`{text}` is not a byte size; write bytes (`1048576`) or a size such as `512KiB`, `16MiB` or `1GiB`")
    };
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(bad)
}

/// `16MiB` when the size is a whole number of KiB, MiB or GiB, else `N bytes`.
pub fn format_byte_size(n: u64) -> String {
    match [(30, "GiB"), (20, "MiB"), (10, "KiB")]
        .into_iter()
        .find(|(shift, _)| n >= 1 << shift && n.is_multiple_of(1 << shift))
    {
        Some((shift, unit)) => format!("{}{unit}", n >> shift),
        None => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_take_plain_bytes_and_binary_units() {
        assert_eq!(parse_byte_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_byte_size("512 kib"), Ok(512 << 10));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("1048576"), Ok(1 << 20));
        assert_eq!(
            parse_byte_size("16MB"),
            Err(
                "`16MB` is not a byte size; write bytes (`1048576`) or a size such as `512KiB`, `16MiB` or `1GiB`"
                    .into()
            )
        );
        assert!(parse_byte_size("MiB").is_err());
        assert!(parse_byte_size("99999999999999999999GiB").is_err());
        assert_eq!(format_byte_size(16 << 20), "16MiB");
        assert_eq!(format_byte_size(512 << 10), "512KiB");
        assert_eq!(format_byte_size(1536), "1536 bytes");
    }
}
