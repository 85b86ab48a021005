//! Go's `time.Duration` text, as the classic control protocol and the configuration use it
//! (`TimeStr` of ping replies, `ttl`, `maxidleconnectiontimeout`...). Shared by the daemon and
//! the clients so that both read and write exactly what Go does.

use std::time::Duration;

/// Formats a duration like Go's `time.Duration.String()`: `850ns`, `329.589µs`, `1.16216ms`,
/// `2.5s`, `1m30s`, `1h0m0s`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    fn frac(value: u128, unit: u128, suffix: &str) -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return format!("{whole}{suffix}");
        }
        let digits = unit.ilog10() as usize;
        let text = format!("{rest:0digits$}");
        format!("{whole}.{}{suffix}", text.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return frac(nanos, 1_000, "µs");
    }
    if nanos < 1_000_000_000 {
        return frac(nanos, 1_000_000, "ms");
    }
    let secs_total = nanos / 1_000_000_000;
    let sub = nanos % 1_000_000_000;
    let hours = secs_total / 3600;
    let minutes = (secs_total % 3600) / 60;
    let secs = frac((secs_total % 60) * 1_000_000_000 + sub, 1_000_000_000, "s");
    match (hours, minutes) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// Go's `time.ParseDuration`, restricted to non-negative values: `300ms`, `1.5h`, `2h45m`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?}");
    let mut rest = s;
    let mut negative = false;
    if let Some(r) = rest.strip_prefix('-') {
        negative = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {s:?}")),
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut nanos = whole.checked_mul(unit).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            // Keep at most 30 digits: beyond that nothing is left of a nanosecond.
            let frac = &frac_part[..frac_part.len().min(30)];
            let num: u128 = frac.parse().map_err(|_| invalid())?;
            let den = 10u128.pow(u32::try_from(frac.len()).map_err(|_| invalid())?);
            nanos = nanos
                .checked_add(num.checked_mul(unit).ok_or_else(invalid)? / den)
                .ok_or_else(invalid)?;
        }
        total = total.checked_add(nanos).ok_or_else(invalid)?;
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
    }
    if negative && total > 0 {
        return Err(format!("negative duration {s:?}"));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| invalid())?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| invalid())?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_go() {
        let cases = [
            (Duration::from_nanos(0), "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(329_589), "329.589µs"),
            (Duration::from_nanos(218_550), "218.55µs"),
            (Duration::from_nanos(1_162_160), "1.16216ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_nanos(1_000), "1µs"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want, "{d:?}");
            assert_eq!(parse(want), Ok(d), "{want}");
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse("1h20m30s"), Ok(Duration::from_secs(4830)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "1x", "h", "-1s", "1.s.s"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
