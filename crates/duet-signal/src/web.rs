//! The browser client, served by `duet serve` on its own port: a page that
//! speaks `signaling-v1.md` to the same server, so someone without the app can
//! join a call from a browser. Its files are compiled into the binary: no build
//! step, nothing fetched from elsewhere.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// One file of the page.
#[derive(Debug, Clone, Copy)]
pub struct WebFile {
    /// The path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file of the browser client.
pub const WEB_FILES: &[WebFile] = &[
    WebFile {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    WebFile {
        path: "/duet.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/duet.js"),
    },
    WebFile {
        path: "/test-signals.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/test-signals.js"),
    },
    WebFile {
        path: "/beep-worklet.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/beep-worklet.js"),
    },
    WebFile {
        path: "/duet.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/duet.css"),
    },
    WebFile {
        path: "/duet.png",
        content_type: "image/png",
        body: include_bytes!("../../../assets/duet.png"),
    },
];

/// The routes of the browser client, to merge into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    WEB_FILES.iter().fold(Router::new(), |router, file| {
        let file = *file;
        router.route(
            file.path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, file.content_type),
                        // The page is small and changes with the binary: always revalidate.
                        (header::CACHE_CONTROL, "no-cache"),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    ],
                    file.body,
                )
                    .into_response()
            }),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_refers_only_to_files_that_are_served() {
        let served: Vec<&str> = WEB_FILES.iter().map(|f| f.path).collect();
        let text_files = WEB_FILES
            .iter()
            .filter(|f| f.content_type.starts_with("text/"));
        for file in text_files {
            let text = std::str::from_utf8(file.body).expect("web files are UTF-8");
            for quote in ['"', '\''] {
                for (at, _) in text.match_indices(&format!("{quote}/")) {
                    let rest = &text[at + 1..];
                    let Some(end) = rest.find(quote) else {
                        continue;
                    };
                    let path = &rest[..end];
                    if path.ends_with(".js") || path.ends_with(".css") || path.ends_with(".png") {
                        assert!(
                            served.contains(&path),
                            "{} refers to {path}, which is not served",
                            file.path
                        );
                    }
                }
            }
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{} fetches something from elsewhere",
                file.path
            );
        }
    }
}
