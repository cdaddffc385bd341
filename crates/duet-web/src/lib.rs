//! Duet's browser client: a page that joins a call from a browser, so someone
//! without the app can call someone who has it (or two browsers can call each
//! other). It speaks the signaling protocol of `docs/protocol.md` to the server
//! that served it, and sends and measures the test signals of
//! `docs/test-signals.md` with `?test=1`.
//!
//! This crate is only the page: plain HTML, CSS and JavaScript in `static/`,
//! compiled into the binary (no build step, nothing fetched from elsewhere),
//! and [`routes`] to serve them. `duet serve` merges these routes with the
//! signaling server's, which itself knows nothing of browsers or WebRTC.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// One file of the page.
#[derive(Debug, Clone, Copy)]
struct WebFile {
    /// The path it is served at.
    path: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes, as compiled in.
    body: &'static [u8],
}

/// Every file of the browser client.
const WEB_FILES: &[WebFile] = &[
    WebFile {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../static/index.html"),
    },
    WebFile {
        path: "/duet.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/duet.js"),
    },
    WebFile {
        path: "/test-signals.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/test-signals.js"),
    },
    WebFile {
        path: "/chat.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/chat.js"),
    },
    WebFile {
        path: "/privacy.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/privacy.js"),
    },
    WebFile {
        path: "/beep-worklet.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/beep-worklet.js"),
    },
    WebFile {
        path: "/duet.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../static/duet.css"),
    },
    WebFile {
        path: "/duet.png",
        content_type: "image/png",
        body: include_bytes!("../../../assets/duet.png"),
    },
];

/// The routes of the browser client: every file of [`WEB_FILES`] at its path,
/// ready to be served beside the signaling server's own routes.
pub fn routes() -> Router {
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

    /// A plain HTTP/1.1 GET over a real socket; the whole response as bytes.
    async fn get(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let request = format!("GET {path} HTTP/1.1\r\nHost: duet\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("request sent");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("response read");
        response
    }

    #[tokio::test]
    async fn every_file_is_served_whole_with_its_type_and_nothing_else_is() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, routes()).await });

        for file in WEB_FILES {
            let response = get(addr, file.path).await;
            let split = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("headers end");
            let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{}: {head}", file.path);
            assert!(
                head.contains(&format!("content-type: {}", file.content_type)),
                "{}: {head}",
                file.path
            );
            assert!(head.contains("x-content-type-options: nosniff"), "{head}");
            assert_eq!(&response[split + 4..], file.body, "{}", file.path);
        }
        let missing = get(addr, "/nothing-here.js").await;
        assert!(missing.starts_with(b"HTTP/1.1 404"));
    }
}
