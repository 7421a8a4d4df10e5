//! Postgres values to JSON that keeps their meaning: exact numerics and big integers as strings,
//! ISO 8601 times, JSON as JSON, arrays as arrays, and a clear placeholder for types we do not decode.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike};
use fallible_iterator::FallibleIterator;
use postgres_protocol::types as pt;
use serde_json::{Value, json};
use tokio_postgres::types::{FromSql, Kind, Type};

/// Largest integer a JSON number carries exactly in every client (2^53).
const MAX_SAFE_INT: i64 = 1 << 53;
/// 2000-01-01 (Postgres' epoch) in Unix seconds.
const PG_EPOCH_UNIX: i64 = 946_684_800;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A column's raw bytes, taken without conversion so that any type can be read.
pub struct RawCell<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(RawCell(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(RawCell(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A human-readable type name: `int8`, `text[]`, `mood` (enums keep their own name).
pub fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(member) => format!("{}[]", type_name(member)),
        _ => ty.name().to_string(),
    }
}

/// Converts one value; never fails: undecodable input becomes a placeholder string.
pub fn to_json(ty: &Type, raw: Option<&[u8]>) -> Value {
    match raw {
        None => Value::Null,
        Some(buf) => decode(ty, buf).unwrap_or_else(|e| json!(format!("<undecodable {}: {e}>", type_name(ty)))),
    }
}

fn decode(ty: &Type, buf: &[u8]) -> Result<Value, BoxError> {
    match ty.kind() {
        Kind::Array(member) => return decode_array(member, buf),
        Kind::Enum(_) => return Ok(json!(pt::text_from_sql(buf)?)),
        Kind::Range(member) => return decode_range(member, buf),
        Kind::Domain(base) => return decode(base, buf),
        _ => {}
    }
    Ok(match *ty {
        Type::BOOL => json!(pt::bool_from_sql(buf)?),
        Type::INT2 => json!(pt::int2_from_sql(buf)?),
        Type::INT4 => json!(pt::int4_from_sql(buf)?),
        Type::INT8 => {
            let v = pt::int8_from_sql(buf)?;
            if v.abs() <= MAX_SAFE_INT {
                json!(v)
            } else {
                json!(v.to_string())
            }
        }
        Type::OID | Type::REGCLASS | Type::REGPROC | Type::REGTYPE | Type::XID | Type::CID => {
            json!(pt::oid_from_sql(buf)?)
        }
        Type::FLOAT4 => float(pt::float4_from_sql(buf)? as f64, |v| json!(v as f32)),
        Type::FLOAT8 => float(pt::float8_from_sql(buf)?, |v| json!(v)),
        Type::NUMERIC => json!(numeric_to_string(buf)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML | Type::JSONPATH => {
            json!(pt::text_from_sql(buf)?)
        }
        Type::CHAR => json!((pt::char_from_sql(buf)? as u8 as char).to_string()),
        Type::JSON => json_exact(std::str::from_utf8(buf)?)?,
        // jsonb's binary form is a version byte, then the text.
        Type::JSONB => match buf.split_first() {
            Some((1, text)) => json_exact(std::str::from_utf8(text)?)?,
            _ => return Err("unsupported jsonb version".into()),
        },
        Type::UUID => json!(uuid::Uuid::from_bytes(pt::uuid_from_sql(buf)?).to_string()),
        Type::BYTEA => json!(format!("\\x{}", hex(pt::bytea_from_sql(buf)))),
        Type::DATE => json!(date_to_string(pt::date_from_sql(buf)?)),
        Type::TIME => json!(time_to_string(pt::time_from_sql(buf)?)),
        Type::TIMETZ => json!(timetz_to_string(buf)?),
        Type::TIMESTAMP => json!(timestamp_to_string(pt::timestamp_from_sql(buf)?, "")),
        Type::TIMESTAMPTZ => json!(timestamp_to_string(pt::timestamp_from_sql(buf)?, "Z")),
        Type::INTERVAL => json!(interval_to_string(buf)?),
        Type::INET | Type::CIDR => {
            let inet = pt::inet_from_sql(buf)?;
            let full = if inet.addr().is_ipv4() { 32 } else { 128 };
            if *ty == Type::INET && inet.netmask() == full {
                json!(inet.addr().to_string())
            } else {
                json!(format!("{}/{}", inet.addr(), inet.netmask()))
            }
        }
        Type::MACADDR => {
            let m = pt::macaddr_from_sql(buf)?;
            json!(m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
        }
        Type::BIT | Type::VARBIT => {
            let v = pt::varbit_from_sql(buf)?;
            let bytes = v.bytes();
            json!(
                (0..v.len())
                    .map(|i| if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                        '1'
                    } else {
                        '0'
                    })
                    .collect::<String>()
            )
        }
        Type::PG_LSN => {
            let lsn = pt::lsn_from_sql(buf)?;
            json!(format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff))
        }
        _ => json!(format!("<{} value not decoded>", type_name(ty))),
    })
}

fn float(v: f64, finite: impl Fn(f64) -> Value) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        finite(v)
    }
}

fn decode_array(member: &Type, buf: &[u8]) -> Result<Value, BoxError> {
    use postgres_protocol::types::ArrayDimension;
    let array = pt::array_from_sql(buf)?;
    let dims: Vec<usize> = array
        .dimensions()
        .map(|d: ArrayDimension| Ok(d.len as usize))
        .collect()?;
    let mut values = Vec::new();
    let mut it = array.values();
    while let Some(v) = it.next()? {
        values.push(to_json(member, v));
    }
    if dims.is_empty() {
        return Ok(Value::Array(vec![]));
    }
    Ok(nest(&dims, &mut values.into_iter()))
}

fn nest(dims: &[usize], values: &mut impl Iterator<Item = Value>) -> Value {
    match dims {
        [last] => Value::Array(values.take(*last).collect()),
        [first, rest @ ..] => Value::Array((0..*first).map(|_| nest(rest, values)).collect()),
        [] => Value::Array(vec![]),
    }
}

fn decode_range(member: &Type, buf: &[u8]) -> Result<Value, BoxError> {
    use pt::{Range, RangeBound};
    Ok(match pt::range_from_sql(buf)? {
        Range::Empty => json!({"empty": true}),
        Range::Nonempty(lower, upper) => {
            let bound = |b: RangeBound<Option<&[u8]>>| match b {
                RangeBound::Inclusive(v) => (v.map(|v| to_json(member, Some(v))).unwrap_or(Value::Null), true),
                RangeBound::Exclusive(v) => (v.map(|v| to_json(member, Some(v))).unwrap_or(Value::Null), false),
                RangeBound::Unbounded => (Value::Null, false),
            };
            let (lo, lo_inc) = bound(lower);
            let (hi, hi_inc) = bound(upper);
            json!({"lower": lo, "upper": hi, "lower_inclusive": lo_inc, "upper_inclusive": hi_inc})
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Postgres' binary numeric (base-10000 digits) to its exact decimal text.
pub fn numeric_to_string(buf: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        buf.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value too short".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        other => return Err(format!("invalid numeric sign {other:#x}").into()),
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| word(8 + 2 * i)).collect::<Result<_, _>>()?;
    let digit = |idx: i64| {
        if idx >= 0 && (idx as usize) < digits.len() {
            digits[idx as usize]
        } else {
            0
        }
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                out.push_str(&digit(i).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut idx = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(idx)));
            idx += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

fn date_to_string(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        _ => NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|d| d.checked_add_signed(chrono::TimeDelta::days(days as i64)))
            .map(|d| {
                let mut out = String::with_capacity(10);
                push_date(&mut out, d);
                out
            })
            .unwrap_or_else(|| format!("<date out of range: {days} days from 2000-01-01>")),
    }
}

/// `%Y-%m-%d` as chrono prints it, without parsing a format string per value (a 1,000-row result
/// of timestamps spent 15 % of its time there): four-digit years, a sign outside 0–9999.
fn push_date(out: &mut String, d: NaiveDate) {
    let y = d.year();
    let _ = match y {
        0..=9999 => write!(out, "{y:04}"),
        ..0 => write!(out, "-{:04}", y.unsigned_abs()),
        _ => write!(out, "+{y}"),
    };
    let _ = write!(out, "-{:02}-{:02}", d.month(), d.day());
}

/// `%H:%M:%S%.f` as chrono prints it: the fraction with 0, 3, 6 or 9 digits, as few as it needs.
fn push_time(out: &mut String, t: NaiveTime) {
    let _ = write!(out, "{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    let nanos = t.nanosecond() % 1_000_000_000;
    let _ = match nanos {
        0 => Ok(()),
        n if n % 1_000_000 == 0 => write!(out, ".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => write!(out, ".{:06}", n / 1_000),
        n => write!(out, ".{n:09}"),
    };
}

fn time_to_string(micros: i64) -> String {
    if micros == 86_400_000_000 {
        return "24:00:00".into();
    }
    NaiveTime::from_num_seconds_from_midnight_opt((micros / 1_000_000) as u32, ((micros % 1_000_000) * 1000) as u32)
        .map(|t| {
            let mut out = String::with_capacity(15);
            push_time(&mut out, t);
            out
        })
        .unwrap_or_else(|| format!("<time out of range: {micros} µs>"))
}

fn timetz_to_string(buf: &[u8]) -> Result<String, BoxError> {
    if buf.len() != 12 {
        return Err("timetz value must be 12 bytes".into());
    }
    let micros = i64::from_be_bytes(buf[..8].try_into()?);
    // Postgres stores the zone as seconds *west* of UTC.
    let east = -i32::from_be_bytes(buf[8..].try_into()?);
    let (sign, abs) = if east < 0 { ('-', -east) } else { ('+', east) };
    Ok(format!(
        "{}{sign}{:02}:{:02}",
        time_to_string(micros),
        abs / 3600,
        abs % 3600 / 60
    ))
}

fn timestamp_to_string(micros: i64, suffix: &str) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => micros
            .checked_add(PG_EPOCH_UNIX * 1_000_000)
            .and_then(DateTime::from_timestamp_micros)
            .map(|t| {
                let t = t.naive_utc();
                let mut out = String::with_capacity(27 + suffix.len());
                push_date(&mut out, t.date());
                out.push('T');
                push_time(&mut out, t.time());
                out.push_str(suffix);
                out
            })
            .unwrap_or_else(|| format!("<timestamp out of range: {micros} µs from 2000-01-01>")),
    }
}

/// ISO 8601 duration, as Postgres prints with `intervalstyle = iso_8601`: `P1Y2M3DT4H5M6.5S`.
fn interval_to_string(buf: &[u8]) -> Result<String, BoxError> {
    if buf.len() != 16 {
        return Err("interval value must be 16 bytes".into());
    }
    let micros = i64::from_be_bytes(buf[..8].try_into()?);
    let days = i32::from_be_bytes(buf[8..12].try_into()?);
    let months = i32::from_be_bytes(buf[12..].try_into()?);
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (v, unit) in [(years as i64, 'Y'), (months as i64, 'M'), (days as i64, 'D')] {
        if v != 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    if micros != 0 {
        out.push('T');
        let neg = micros < 0;
        let abs = micros.unsigned_abs();
        let (h, m, s, us) = (
            abs / 3_600_000_000,
            abs / 60_000_000 % 60,
            abs / 1_000_000 % 60,
            abs % 1_000_000,
        );
        let sign = if neg { "-" } else { "" };
        if h != 0 {
            out.push_str(&format!("{sign}{h}H"));
        }
        if m != 0 {
            out.push_str(&format!("{sign}{m}M"));
        }
        if s != 0 || us != 0 {
            let frac = if us != 0 {
                format!(".{us:06}").trim_end_matches('0').to_string()
            } else {
                String::new()
            };
            out.push_str(&format!("{sign}{s}{frac}S"));
        }
    }
    if out == "P" {
        out.push_str("T0S");
    }
    Ok(out)
}

/// JSON text to a value without losing a digit: a number that a JSON reader (and JavaScript's
/// doubles) would round — an integer beyond ±2^53, more digits than a double holds, or out of a
/// double's range — is kept as a string of its exact text, as `bigint` and `numeric` are.
pub fn json_exact(text: &str) -> Result<Value, BoxError> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    let mut plain = 0; // start of the text not yet copied
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let token = &text[start..i];
                if !exact_as_double(token) {
                    out.push_str(&text[plain..start]);
                    out.push('"');
                    out.push_str(token);
                    out.push('"');
                    plain = i;
                }
            }
            _ => i += 1,
        }
    }
    if plain == 0 {
        return Ok(serde_json::from_str(text)?);
    }
    out.push_str(&text[plain.min(text.len())..]);
    Ok(serde_json::from_str(&out)?)
}

/// Whether a JSON number token reads back as the same number from a double.
fn exact_as_double(token: &str) -> bool {
    if !token.contains(['.', 'e', 'E']) {
        return token.parse::<i64>().is_ok_and(|v| v.abs() <= MAX_SAFE_INT);
    }
    match token.parse::<f64>() {
        Ok(f) if f.is_finite() => decimal_digits(token) == decimal_digits(&format!("{f:e}")),
        _ => false,
    }
}

/// A decimal number as (sign, significant digits, exponent of the last digit): `1.50`, `15e-1`
/// and `1.5` give the same.
fn decimal_digits(token: &str) -> (bool, String, i64) {
    let (mantissa, exp) = match token.find(['e', 'E']) {
        Some(i) => (&token[..i], token[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (token, 0),
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches(['-', '+']);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let mut exp = exp - frac.len() as i64;
    let trimmed_end = digits.trim_end_matches('0');
    exp += (digits.len() - trimmed_end.len()) as i64;
    let significant = trimmed_end.trim_start_matches('0').to_string();
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    (negative, significant, exp)
}

#[cfg(test)]
mod tests {
    /// Dates, times and timestamps print exactly as chrono's `format` printed them, across the
    /// range Postgres stores (4713 BC – 294276 AD) and every fraction length.
    #[test]
    fn hand_formatted_dates_and_times_match_chrono() {
        use chrono::{DateTime, NaiveDate};
        let mut micros: Vec<i64> = vec![0, 1, 999, 1_000, 123_456, 86_399_999_999, -1, -86_400_000_000];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Up to ±9e15 µs around 2000: about 285,000 years either way.
            micros.push((x % 18_000_000_000_000_000) as i64 - 9_000_000_000_000_000);
            micros.push(((x >> 20) % 100_000_000_000) as i64 * 1_000);
        }
        for m in micros {
            let Some(t) = (m.checked_add(super::PG_EPOCH_UNIX * 1_000_000)).and_then(DateTime::from_timestamp_micros)
            else {
                continue;
            };
            let t = t.naive_utc();
            let chrono = format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S%.f"));
            assert_eq!(super::timestamp_to_string(m, "Z"), chrono, "{m}");
            let days = (m / 86_400_000_000) as i32;
            if let Some(d) = NaiveDate::from_ymd_opt(2000, 1, 1)
                .and_then(|d| d.checked_add_signed(chrono::TimeDelta::days(days as i64)))
            {
                assert_eq!(super::date_to_string(days), d.format("%Y-%m-%d").to_string(), "{days}");
            }
            let of_day = m.rem_euclid(86_400_000_000);
            let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                (of_day / 1_000_000) as u32,
                ((of_day % 1_000_000) * 1000) as u32,
            )
            .unwrap();
            assert_eq!(super::time_to_string(of_day), time.format("%H:%M:%S%.f").to_string());
        }
    }

    use super::*;

    /// Issue 17 item 6: json/jsonb numbers lost digits (`1.2345678901234568e+29`), `1e400` was
    /// undecodable, and integers above 2^53 were rounded by JavaScript clients.
    #[test]
    fn json_numbers_keep_their_exact_text_when_a_double_cannot() {
        let v = json_exact(
            r#"{"big": 123456789012345678901234567890, "huge": [1e400], "safe": 9007199254740992,
            "unsafe": 9007199254740993, "neg": -9007199254740993, "ratio": 0.125, "half": 1.50,
            "long": 0.1000000000000000055511151231257827, "s": "1e400 \" 123456789012345678901", "e": 2.5e-3}"#,
        )
        .unwrap();
        assert_eq!(v["big"], json!("123456789012345678901234567890"));
        assert_eq!(v["huge"], json!(["1e400"]));
        assert_eq!(v["safe"], json!(9007199254740992i64));
        assert_eq!(v["unsafe"], json!("9007199254740993"));
        assert_eq!(v["neg"], json!("-9007199254740993"));
        assert_eq!(v["ratio"], json!(0.125));
        assert_eq!(v["half"], json!(1.5));
        assert_eq!(v["long"], json!("0.1000000000000000055511151231257827"));
        assert_eq!(v["s"], json!("1e400 \" 123456789012345678901"));
        assert_eq!(v["e"], json!(0.0025));
        // Through the binary jsonb form too.
        let mut jsonb = vec![1u8];
        jsonb.extend_from_slice(b"[123456789012345678901234567890]");
        assert_eq!(
            to_json(&Type::JSONB, Some(&jsonb)),
            json!(["123456789012345678901234567890"])
        );
    }

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_keeps_every_digit() {
        // 12345678901234567890.12 = [1234, 5678, 9012, 3456, 7890] weight 4, frac [1200]
        let n = numeric(6, 4, 0, 2, &[1234, 5678, 9012, 3456, 7890, 1200]);
        assert_eq!(numeric_to_string(&n).unwrap(), "12345678901234567890.12");
        assert_eq!(
            numeric_to_string(&numeric(1, -1, 0x4000, 5, &[12])).unwrap(),
            "-0.00120"
        );
        assert_eq!(numeric_to_string(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric_to_string(&numeric(1, 1, 0, 0, &[7])).unwrap(), "70000");
        assert_eq!(numeric_to_string(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
    }

    #[test]
    fn intervals_are_iso_8601() {
        let iv = |us: i64, d: i32, m: i32| {
            let mut b = us.to_be_bytes().to_vec();
            b.extend(d.to_be_bytes());
            b.extend(m.to_be_bytes());
            interval_to_string(&b).unwrap()
        };
        assert_eq!(
            iv(4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000, 3, 14),
            "P1Y2M3DT4H5M6.5S"
        );
        assert_eq!(iv(0, 0, 0), "PT0S");
        assert_eq!(iv(-90_000_000, 0, 0), "PT-1M-30S");
    }

    #[test]
    fn timestamps_and_dates_handle_infinity_and_precision() {
        assert_eq!(timestamp_to_string(0, "Z"), "2000-01-01T00:00:00Z");
        assert_eq!(timestamp_to_string(1_500, ""), "2000-01-01T00:00:00.001500");
        assert_eq!(timestamp_to_string(i64::MAX, "Z"), "infinity");
        assert_eq!(date_to_string(-1), "1999-12-31");
        assert_eq!(date_to_string(i32::MIN), "-infinity");
    }
}
