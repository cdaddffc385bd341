//! Which web pages may open `/ws`: a browser names the page's origin in the
//! `Origin` header, so a page of another site cannot use a visitor's browser
//! to reach the server. Clients that send no `Origin` (the native app, tools)
//! are not browsers acting for someone else and are let through.

use url::Url;

/// The origins allowed besides the server's own.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    /// ASCII serialisations (`https://example.com:8443`), lowercase.
    allowed: Vec<String>,
}

/// An `--allow-origin` value that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin:?} is not an origin like https://example.com: {reason}")]
pub struct BadOrigin {
    /// The value as given.
    pub origin: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The serialisation of `text` as an origin, if it is one.
fn serialise(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|err| err.to_string())?;
    let origin = url.origin();
    if !origin.is_tuple() {
        return Err("it has no scheme, host and port".into());
    }
    Ok(origin.ascii_serialization().to_ascii_lowercase())
}

impl OriginPolicy {
    /// A policy that allows the server's own origin and `allowed`.
    pub fn new(allowed: &[String]) -> Result<OriginPolicy, BadOrigin> {
        let allowed = allowed
            .iter()
            .map(|origin| {
                serialise(origin.trim()).map_err(|reason| BadOrigin {
                    origin: origin.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(OriginPolicy { allowed })
    }

    /// Whether a request with these `Origin` and `Host` headers may upgrade.
    /// Same origin means the page's host and port are the ones the request
    /// was sent to (as gorilla/websocket checks it); the scheme is not
    /// compared, since a TLS proxy in front changes it.
    pub fn allows(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        let Ok(serialised) = serialise(origin) else {
            return false;
        };
        if self.allowed.contains(&serialised) {
            return true;
        }
        let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let Ok(url) = Url::parse(origin) else {
            return false;
        };
        let Some(origin_host) = url.host_str() else {
            return false;
        };
        let authority = match url.port() {
            Some(port) => format!("{origin_host}:{port}"),
            None => origin_host.to_owned(),
        };
        authority.eq_ignore_ascii_case(host.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(policy: &OriginPolicy, origin: Option<&str>, host: &str) -> bool {
        policy.allows(origin.map(str::as_bytes), Some(host.as_bytes()))
    }

    #[test]
    fn same_origin_and_no_origin_pass_by_default() {
        let policy = OriginPolicy::default();
        assert!(allows(&policy, None, "duet.example:8080"));
        assert!(allows(
            &policy,
            Some("http://duet.example:8080"),
            "duet.example:8080"
        ));
        assert!(allows(
            &policy,
            Some("https://Duet.Example"),
            "duet.example"
        ));
        assert!(allows(
            &policy,
            Some("http://127.0.0.1:9000"),
            "127.0.0.1:9000"
        ));
        assert!(allows(&policy, Some("http://[::1]:9000"), "[::1]:9000"));
    }

    #[test]
    fn other_origins_are_refused_unless_allowed() {
        let policy = OriginPolicy::default();
        assert!(!allows(
            &policy,
            Some("https://evil.example"),
            "duet.example"
        ));
        assert!(!allows(
            &policy,
            Some("http://duet.example:8081"),
            "duet.example:8080"
        ));
        assert!(!allows(&policy, Some("null"), "duet.example"));
        assert!(!allows(&policy, Some("http://a\nb"), "duet.example"));
        assert!(!policy.allows(Some(b"https://duet.example"), None));
        let policy =
            OriginPolicy::new(&["https://Friends.example".into()]).expect("a valid origin");
        assert!(allows(
            &policy,
            Some("https://friends.example"),
            "duet.example"
        ));
        assert!(!allows(
            &policy,
            Some("http://friends.example"),
            "duet.example"
        ));
    }

    #[test]
    fn a_bad_allowed_origin_is_a_clear_error() {
        let err = OriginPolicy::new(&["friends.example".into()]).expect_err("no scheme");
        assert_eq!(err.origin, "friends.example");
        assert!(OriginPolicy::new(&["data:text/plain,hi".into()]).is_err());
    }
}
