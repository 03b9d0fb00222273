//! What a response tells the user, held to what the API server passes on.
//!
//! Warnings travel as HTTP `Warning` headers. The API server drops repeated ones
//! and passes on 4096 characters of them in all; past that it cuts each to 256
//! characters and then drops the rest, in an order nobody chose
//! (k8s.io/apiserver `endpoints/filters/warning.go`). So the host sends each
//! warning as one printable line of at most 256 characters, once, and stops at
//! 4096 characters with a last warning that says so. Denial messages are cut too:
//! a policy's megabyte of text is no use to anyone reading `kubectl` output.

/// Longest warning kept.
const MAX_WARNING_CHARS: usize = 256;

/// Characters of warnings a response carries at most.
const MAX_WARNINGS_TOTAL_CHARS: usize = 4096;

/// Warnings of one verdict looked at: bounds the work a policy returning a
/// million warnings can cause.
const MAX_WARNINGS_PER_VERDICT: usize = 1000;

/// Said once, as the last warning, when warnings had to be dropped.
pub(super) const WARNINGS_DROPPED: &str = "stsguard: further warnings were dropped: the API server passes on at most 4096 characters of them";

/// Longest denial message kept.
pub(super) const MAX_DENIAL_CHARS: usize = 4096;

/// Adds `new` to `warnings`, each prefixed with `prefix`, as the API server will
/// pass them on.
pub(super) fn add_warnings(
    warnings: &mut Vec<String>,
    prefix: &str,
    new: impl IntoIterator<Item = String>,
) {
    let dropped =
        |warnings: &[String]| warnings.last().map(String::as_str) == Some(WARNINGS_DROPPED);
    let mut new = new.into_iter();
    for warning in new.by_ref().take(MAX_WARNINGS_PER_VERDICT) {
        if dropped(warnings) {
            return;
        }
        let text = one_line(prefix, &warning);
        if warnings.contains(&text) {
            continue;
        }
        let total: usize = warnings.iter().map(|w| w.chars().count()).sum();
        let room = MAX_WARNINGS_TOTAL_CHARS - WARNINGS_DROPPED.chars().count();
        if total + text.chars().count() > room {
            warnings.push(WARNINGS_DROPPED.into());
            return;
        }
        warnings.push(text);
    }
    if new.next().is_some() && !dropped(warnings) {
        warnings.push(WARNINGS_DROPPED.into());
    }
}

/// A policy's denial message, cut to [`MAX_DENIAL_CHARS`].
pub(super) fn denial_message(message: String) -> String {
    bounded(message, MAX_DENIAL_CHARS)
}

/// `prefix` + `warning` as one printable line of at most [`MAX_WARNING_CHARS`].
fn one_line(prefix: &str, warning: &str) -> String {
    let mut text: String = prefix.to_string();
    for c in warning.chars().take(MAX_WARNING_CHARS + 1) {
        text.push(if c.is_control() { ' ' } else { c });
    }
    bounded(text, MAX_WARNING_CHARS)
}

/// `text`, cut to `max` characters (the last an ellipsis) if it is longer.
fn bounded(mut text: String, max: usize) -> String {
    if text.chars().nth(max).is_some() {
        let (end, _) = text.char_indices().nth(max - 1).expect("longer than max");
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(warnings: &[String]) -> usize {
        warnings.iter().map(|w| w.chars().count()).sum()
    }

    #[test]
    fn warnings_are_single_short_lines() {
        let mut warnings = Vec::new();
        let long = "x".repeat(1000);
        add_warnings(&mut warnings, "stsguard/p: ", [format!("a\nb\t{long}")]);
        let [warning] = &warnings[..] else {
            panic!("{warnings:?}")
        };
        assert!(warning.starts_with("stsguard/p: a b x"));
        assert_eq!(warning.chars().count(), MAX_WARNING_CHARS);
        assert!(warning.ends_with('…'));
        assert_eq!(bounded("short".into(), 5), "short");
    }

    #[test]
    fn repeated_warnings_are_sent_once() {
        let mut warnings = Vec::new();
        add_warnings(&mut warnings, "p: ", ["a".into(), "a".into(), "b".into()]);
        add_warnings(&mut warnings, "p: ", ["a".into()]);
        add_warnings(&mut warnings, "q: ", ["a".into()]);
        assert_eq!(warnings, ["p: a", "p: b", "q: a"]);
    }

    #[test]
    fn warnings_stop_at_what_the_api_server_passes_on_and_say_so() {
        let mut warnings = Vec::new();
        add_warnings(&mut warnings, "p: ", (0..100).map(|i| format!("{i:0>100}")));
        assert_eq!(warnings.last().unwrap(), WARNINGS_DROPPED);
        assert!(chars(&warnings) <= MAX_WARNINGS_TOTAL_CHARS);
        let kept = warnings.len();
        assert!(kept > 30, "{kept}");
        add_warnings(&mut warnings, "q: ", ["late".into()]);
        assert_eq!(warnings.len(), kept, "nothing after the notice");
    }

    #[test]
    fn a_million_warnings_cost_little_and_are_noted() {
        let mut warnings = Vec::new();
        add_warnings(
            &mut warnings,
            "p: ",
            std::iter::repeat_n("same".to_string(), 1_000_000),
        );
        assert_eq!(warnings, ["p: same", WARNINGS_DROPPED]);
    }

    #[test]
    fn long_denials_are_cut() {
        let message = denial_message("no ".repeat(5000));
        assert_eq!(message.chars().count(), MAX_DENIAL_CHARS);
        assert!(message.ends_with('…'));
        assert_eq!(denial_message("no".into()), "no");
    }
}
