//! "Did you mean ...?": the closest name by edit distance.

/// The candidate closest to `name` (case-insensitive Levenshtein distance at
/// most a third of the name's length, and at least 1), if any.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name_lower = name.to_ascii_lowercase();
    let max = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(&name_lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters, counting an adjacent transposition as
/// one edit (optimal string alignment).
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, cell) in d.iter_mut().step_by(width).enumerate() {
        *cell = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Option<&str>) {
        assert_eq!(
            closest(name, ["produced_at", "producer_id", "payload", "count"]),
            expected
        );
    }

    #[test]
    fn suggests_close_names_only() {
        check("produced_a", Some("produced_at"));
        check("COUNT", Some("count"));
        check("cnt", None);
        check("zzzzzzzz", None);
        assert_eq!(closest("tabel", ["table", "target"]), Some("table"));
    }
}
