//! Kubernetes quantities (`512Mi`) and durations (`1h30m`): the CEL rules that check them and the
//! Rust parsers the operator uses to turn them into bytes and seconds.

use kube::core::Rule;

/// Parse a Kubernetes quantity (`512Mi`, `2G`, `1.5Gi`, `1e9`, `100m`) into bytes, rounded up the
/// way Kubernetes rounds. `None` when CEL's `isQuantity` would be false. Values beyond `i128`
/// saturate.
pub fn parse_quantity(s: &str) -> Option<i128> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    // value = digits / 10^scale * 2^bin * 10^dec
    let digits = format!("{int}{frac}");
    let mut mantissa: i128 = 0;
    for d in digits.bytes() {
        mantissa = mantissa
            .saturating_mul(10)
            .saturating_add(i128::from(d - b'0'));
    }
    let (bin, mut dec): (u32, i64) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (0, exp.parse::<i64>().ok()?.clamp(-1000, 1000))
        }
    };
    dec -= i64::try_from(frac.len()).ok()?;
    let mut value = mantissa.saturating_mul(1i128 << bin);
    if dec >= 0 {
        for _ in 0..dec.min(60) {
            value = value.saturating_mul(10);
        }
    } else {
        let div = (0..(-dec).min(60)).fold(1i128, |acc, _| acc.saturating_mul(10));
        value = (value + div - 1) / div; // round up, like resource.Quantity
    }
    Some(if negative { -value } else { value })
}

/// The message of [`quantity_rule`].
pub(crate) fn quantity_msg(what: &str) -> String {
    format!("{what} must be a Kubernetes quantity such as '512Mi' or '2Gi'")
}

/// The message of [`min_quantity_rule`].
pub(crate) fn min_quantity_msg(what: &str, min: &str) -> String {
    format!("{what} must be at least {min}")
}

/// CEL: the string is a quantity.
pub(crate) fn quantity_rule(what: &str) -> Rule {
    Rule::new("isQuantity(self)").message(quantity_msg(what).as_str())
}

/// CEL: the quantity is at least `min` (silent when it is not a quantity: [`quantity_rule`] says so).
pub(crate) fn min_quantity_rule(what: &str, min: &str) -> Rule {
    Rule::new(format!(
        "!isQuantity(self) || quantity(self).compareTo(quantity('{min}')) >= 0"
    ))
    .message(min_quantity_msg(what, min).as_str())
}

/// Check both quantity rules in Rust.
pub(crate) fn check_quantity(
    c: &mut crate::common::Checker,
    value: &str,
    field: &str,
    what: &str,
    min: &str,
) {
    let parsed = parse_quantity(value);
    c.check(parsed.is_some(), field, &quantity_msg(what));
    if let Some(v) = parsed {
        c.check(
            v >= parse_quantity(min).expect("valid minimum"),
            field,
            &min_quantity_msg(what, min),
        );
    }
}

/// Bytes to whole MiB, rounded up (the node-agent API takes MiB).
pub fn bytes_to_mib(bytes: i128) -> u64 {
    u64::try_from((bytes.max(0) + (1 << 20) - 1) >> 20).unwrap_or(u64::MAX)
}

/// CEL: a duration in hours, minutes and seconds (`90s`, `30m`, `1h30m`). A subset of what CEL's
/// `duration()` accepts, so `duration(self)` never fails after this matched.
pub(crate) const DURATION_RE: &str = "^([0-9]+[hms])+$";

pub(crate) fn duration_msg(what: &str) -> String {
    format!("{what} must be a duration such as '90s', '30m' or '1h30m'")
}

pub(crate) fn min_duration_msg(what: &str) -> String {
    format!("{what} must be at least 1s")
}

/// CEL: well-formed duration.
pub(crate) fn duration_rule(what: &str) -> Rule {
    Rule::new(format!("self.matches('{DURATION_RE}')")).message(duration_msg(what).as_str())
}

/// CEL: at least one second.
pub(crate) fn min_duration_rule(what: &str) -> Rule {
    Rule::new(format!(
        "!self.matches('{DURATION_RE}') || duration(self) >= duration('1s')"
    ))
    .message(min_duration_msg(what).as_str())
}

/// Parse a duration matching [`DURATION_RE`] into seconds (saturating).
pub fn parse_duration(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut n: Option<u64> = None;
    for c in s.chars() {
        match c {
            '0'..='9' => {
                let d = u64::from(c as u8 - b'0');
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d));
            }
            'h' | 'm' | 's' => {
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total = total.saturating_add(n.take()?.saturating_mul(unit));
            }
            _ => return None,
        }
    }
    // A trailing number without a unit is not a duration.
    n.is_none().then_some(total)
}

/// Check both duration rules in Rust.
pub(crate) fn check_duration(c: &mut crate::common::Checker, value: &str, field: &str, what: &str) {
    let parsed = parse_duration(value);
    c.check(parsed.is_some(), field, &duration_msg(what));
    if let Some(secs) = parsed {
        c.check(secs >= 1, field, &min_duration_msg(what));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let mi = 1i128 << 20;
        assert_eq!(parse_quantity("512Mi"), Some(512 * mi));
        assert_eq!(parse_quantity("1.5Gi"), Some(1536 * mi));
        assert_eq!(parse_quantity("0.0625Gi"), Some(64 * mi));
        assert_eq!(parse_quantity("2G"), Some(2_000_000_000));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("1E+3"), Some(1000));
        assert_eq!(parse_quantity("+7"), Some(7));
        assert_eq!(parse_quantity("-1Gi"), Some(-1024 * mi));
        assert_eq!(parse_quantity("100m"), Some(1)); // 0.1 byte rounds up
        assert_eq!(parse_quantity(".5k"), Some(500));
        assert_eq!(parse_quantity("5."), Some(5));
        for bad in [
            "", "Mi", "512MB", "512 Mi", "1.2.3", "1e", "1e+", "0x10", "abc", "-", ".",
        ] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
        assert_eq!(bytes_to_mib(512 * mi), 512);
        assert_eq!(bytes_to_mib(512 * mi + 1), 513);
        assert_eq!(bytes_to_mib(-5), 0);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("0s"), Some(0));
        for bad in ["", "1", "h", "1d", "1h30", "1.5h", "-1s", "1 h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
