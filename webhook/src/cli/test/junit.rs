//! JUnit XML, the report format CI systems (GitLab, Jenkins, GitHub actions
//! that annotate test results) read: one `<testsuite>` per suite file, one
//! `<testcase>` per case; a suite that could not run is one `<error>`.

use std::fmt::Write;

use super::{CaseResult, SuiteResult};

pub fn render(suites: &[SuiteResult]) -> String {
    let count = |f: fn(&SuiteResult) -> usize| suites.iter().map(f).sum::<usize>();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"stsguard test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
        count(|s| s.cases.len().max(usize::from(s.error.is_some()))),
        count(SuiteResult::failed),
        count(|s| usize::from(s.error.is_some())),
        suites.iter().map(|s| s.seconds).sum::<f64>(),
    );
    for suite in suites {
        let name = escape(&suite.path.display().to_string());
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
            suite.cases.len().max(usize::from(suite.error.is_some())),
            suite.failed(),
            usize::from(suite.error.is_some()),
            suite.seconds,
        );
        if let Some(error) = &suite.error {
            let _ = writeln!(
                xml,
                "    <testcase name=\"(suite)\" classname=\"{name}\"><error message=\"{}\"/></testcase>",
                escape(error)
            );
        }
        for case in &suite.cases {
            write_case(&mut xml, &name, case);
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn write_case(xml: &mut String, suite: &str, case: &CaseResult) {
    let _ = write!(
        xml,
        "    <testcase name=\"{}\" classname=\"{suite}\" time=\"{:.6}\"",
        escape(&case.name),
        case.seconds
    );
    if case.failures.is_empty() {
        xml.push_str("/>\n");
        return;
    }
    let _ = writeln!(
        xml,
        "><failure message=\"{}\">{}</failure></testcase>",
        escape(&case.failures[0]),
        escape(&case.failures.join("\n"))
    );
}

/// Text as XML attribute or element content. Characters XML 1.0 cannot hold
/// at all (most controls) become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn failures_errors_and_odd_characters_are_valid_xml() {
        let suites = [
            SuiteResult {
                path: PathBuf::from("a/tests.yaml"),
                error: None,
                seconds: 0.5,
                cases: vec![
                    CaseResult {
                        name: "ok <1>".into(),
                        failures: vec![],
                        decision: None,
                        seconds: 0.001,
                    },
                    CaseResult {
                        name: "bad".into(),
                        failures: vec!["expected \"x\" & y\u{1}".into(), "second".into()],
                        decision: None,
                        seconds: 0.002,
                    },
                ],
            },
            SuiteResult {
                path: PathBuf::from("b/tests.yaml"),
                error: Some("could not load".into()),
                seconds: 0.0,
                cases: vec![],
            },
        ];
        let xml = render(&suites);
        assert!(
            xml.contains(
                "<testsuites name=\"stsguard test\" tests=\"3\" failures=\"1\" errors=\"1\""
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<testcase name=\"ok &lt;1&gt;\" classname=\"a/tests.yaml\" time=\"0.001000\"/>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<failure message=\"expected &quot;x&quot; &amp; y\u{fffd}\">expected &quot;x&quot; &amp; y\u{fffd}&#10;second</failure>"), "{xml}");
        assert!(xml.contains("<testcase name=\"(suite)\" classname=\"b/tests.yaml\"><error message=\"could not load\"/></testcase>"), "{xml}");
    }
}
