//! The HTML page `GET /` answers with: the time, this visit's number and the pod that served
//! it.
//!
//! Why hand-written: one small page does not justify a template engine. Every value that
//! comes from outside (the pod name is configuration) is HTML-escaped.

use std::fmt::Write;

use jiff::Zoned;

/// What the page shows.
#[derive(Debug)]
pub struct Page<'a> {
    /// This visit's number.
    pub visit: u64,
    /// The pod that served it.
    pub pod: &'a str,
    /// The time, in the configured zone.
    pub time: &'a Zoned,
    /// The zone's IANA name.
    pub zone: &'a str,
}

impl Page<'_> {
    /// The whole HTML document.
    pub fn render(&self) -> String {
        let mut html = String::with_capacity(1024);
        let time = self.time.strftime("%H:%M:%S");
        let date = self.time.strftime("%A, %-d %B %Y");
        let offset = self.time.strftime("%Z, UTC%:z");
        let _ = write!(
            html,
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Visit {visit} · {pod}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem; line-height: 1.5; color: #222; }}
.time {{ font-size: 3.5rem; font-variant-numeric: tabular-nums; margin: 0; }}
.zone {{ color: #666; margin-top: 0; }}
</style>
</head>
<body>
<p class="time">{time}</p>
<p class="zone">{date} · {zone} ({offset})</p>
<p>You are visit <strong id="visit">{visit}</strong> to pod <code id="pod">{pod}</code>.</p>
</body>
</html>
"#,
            visit = self.visit,
            pod = Escaped(self.pod),
            zone = Escaped(self.zone),
        );
        html
    }
}

/// Displays text with the HTML special characters escaped.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    #[test]
    fn shows_time_visit_and_pod() {
        let clock = Clock::new("Europe/Moscow").unwrap();
        let time = clock.at("2024-03-01T21:05:09Z".parse().unwrap());
        let html = Page {
            visit: 42,
            pod: "web-0",
            time: &time,
            zone: clock.zone_name(),
        }
        .render();
        assert!(html.contains(r#"<p class="time">00:05:09</p>"#), "{html}");
        assert!(
            html.contains("Saturday, 2 March 2024 · Europe/Moscow (MSK, UTC+03:00)"),
            "{html}"
        );
        assert!(html.contains(r#"<strong id="visit">42</strong>"#), "{html}");
        assert!(html.contains(r#"<code id="pod">web-0</code>"#), "{html}");
    }

    #[test]
    fn escapes_the_pod_name() {
        let clock = Clock::new("UTC").unwrap();
        let time = clock.now();
        let html = Page {
            visit: 1,
            pod: r#"<script>"a" & 'b'</script>"#,
            time: &time,
            zone: clock.zone_name(),
        }
        .render();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"));
    }
}
