//! How an error and its causes become one line of a message: the registry
//! client (reqwest, hyper, rustls) and kube both nest their causes, and some
//! repeat a cause in their own message while others leave it out.

/// An error and its sources in one line, each cause once.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text = format!("{text}: {message}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_named_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner")]
        struct Repeats(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Hides(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        assert_eq!(describe_error(&Repeats(Inner)), "outer: inner");
        assert_eq!(describe_error(&Hides(Inner)), "outer: inner");
    }
}
