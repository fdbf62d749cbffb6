//! Helpers for speaking the registry API directly: requests, pushes, and test content.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use rbuild_oci::{Digest, media_type};
use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};

use crate::registry::RegistryProcess;

/// A client for one registry.
pub struct Api {
    base: String,
    client: Client,
    login: Option<(String, String)>,
    sessions: bool,
}

impl Api {
    /// A client for `registry`.
    pub fn new(registry: &RegistryProcess) -> Api {
        Api::at(&registry.url(""))
    }

    /// A client for the registry at `base` (`http://host:port`), another implementation's.
    pub fn at(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            login: None,
            sessions: false,
        }
    }

    /// The same client pushing blobs through an upload session (POST, then PUT with the
    /// bytes) instead of one monolithic POST, which distribution 2.8 does not take.
    pub fn with_upload_sessions(mut self) -> Api {
        self.sessions = true;
        self
    }

    /// The same client sending Basic credentials with every request.
    pub fn with_login(mut self, user: &str, password: &str) -> Api {
        self.login = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// A request to `path` (which starts with `/`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.login {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().expect("GET")
    }

    /// `HEAD path`.
    pub fn head(&self, path: &str) -> Response {
        self.request(Method::HEAD, path).send().expect("HEAD")
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().expect("DELETE")
    }

    /// Pushes a blob with a single monolithic POST (or a session, see
    /// [`with_upload_sessions`](Api::with_upload_sessions)) and returns its digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let request = if self.sessions {
            let location = self.start_upload(repo);
            let separator = if location.contains('?') { '&' } else { '?' };
            let url = format!("{location}{separator}digest={digest}");
            // distribution answers with an absolute URL, rbuild with a path.
            self.request(Method::PUT, url.strip_prefix(self.base.as_str()).unwrap_or(&url))
        } else {
            self.request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
        };
        let response = request.body(bytes.to_vec()).send().expect("push blob");
        assert_eq!(
            response.status(),
            201,
            "pushing blob: {}",
            response.text().unwrap_or_default()
        );
        digest
    }

    /// Starts an upload session and returns its `Location` path.
    pub fn start_upload(&self, repo: &str) -> String {
        let response = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .expect("POST upload");
        assert_eq!(response.status(), 202);
        header(&response, "location")
    }

    /// PUTs a manifest.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Response {
        self.request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .expect("PUT manifest")
    }

    /// Pushes a config, layers and a manifest referencing them; returns the manifest's digest.
    pub fn push_image(&self, repo: &str, reference: &str, image: &TestImage) -> Digest {
        self.push_blob(repo, &image.config);
        for layer in &image.layers {
            self.push_blob(repo, layer);
        }
        let response = self.put_manifest(repo, reference, media_type::OCI_MANIFEST, &image.manifest);
        assert_eq!(
            response.status(),
            201,
            "pushing manifest: {}",
            response.text().unwrap_or_default()
        );
        Digest::sha256_of(&image.manifest)
    }
}

/// A header's value, or the empty string.
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The spec error code in a response body (`errors[0].code`).
pub fn error_code(response: Response) -> String {
    let body: serde_json::Value = response.json_value();
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or("<no error code>")
        .to_owned()
}

/// Parsing a response body as JSON.
pub trait JsonBody {
    /// The body as a JSON value (Null if it is not JSON).
    fn json_value(self) -> serde_json::Value;
}

impl JsonBody for Response {
    fn json_value(self) -> serde_json::Value {
        let bytes = self.bytes().unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }
}

/// A small image made in the test: a config, layers and the OCI manifest over them.
pub struct TestImage {
    /// Config bytes.
    pub config: Vec<u8>,
    /// Layer bytes (arbitrary: the registry does not look inside).
    pub layers: Vec<Vec<u8>>,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
}

impl TestImage {
    /// An image whose contents are derived from `seed`, so different seeds differ.
    pub fn new(seed: &str) -> TestImage {
        TestImage::with_extra(seed, serde_json::json!({}))
    }

    /// Like [`TestImage::new`], with extra top-level manifest fields (subject, artifactType…).
    pub fn with_extra(seed: &str, extra: serde_json::Value) -> TestImage {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#).into_bytes();
        let layers = vec![
            format!("layer one of {seed}").into_bytes(),
            format!("layer two of {seed}").into_bytes(),
        ];
        TestImage::from_parts(config, layers, extra)
    }

    /// An image of the given config and layers, with extra top-level manifest fields.
    pub fn from_parts(config: Vec<u8>, layers: Vec<Vec<u8>>, extra: serde_json::Value) -> TestImage {
        let descriptor = |media: &str, bytes: &[u8]| {
            serde_json::json!({
                "mediaType": media,
                "digest": Digest::sha256_of(bytes).to_string(),
                "size": bytes.len(),
            })
        };
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": descriptor(media_type::OCI_CONFIG, &config),
            "layers": layers.iter().map(|l| descriptor(media_type::OCI_LAYER_GZIP, l)).collect::<Vec<_>>(),
        });
        if let (Some(target), Some(extra)) = (manifest.as_object_mut(), extra.as_object()) {
            target.extend(extra.clone());
        }
        TestImage {
            config,
            layers,
            manifest: serde_json::to_vec(&manifest).expect("manifest json"),
        }
    }

    /// The manifest's digest.
    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }

    /// A descriptor of the manifest, for indexes and `subject` fields.
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": self.digest().to_string(),
            "size": self.manifest.len(),
        })
    }
}

/// Sends a request exactly as written (no URL normalisation, so `..` reaches the server) and
/// returns the status code and body.
pub fn raw_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}
