//! `GET /v2/_catalog[?n=<n>&last=<name>]`: the repositories the registry holds.

use http::{Response, StatusCode};
use serde::Serialize;

use crate::Registry;
use crate::error::Result;
use crate::http::{Body, Pagination, json, next_link, query_pairs};
use crate::storage::{BlobStore, MetadataStore};

#[derive(Serialize)]
struct Catalog<'a> {
    repositories: Vec<&'a str>,
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    pub(super) async fn catalog(&self, parts: &http::request::Parts) -> Result<Response<Body>> {
        let request = self.page_request(Pagination::parse(&query_pairs(parts.uri.query()))?);
        let page = self.metadata.repositories(&request).await?;
        let mut headers = Vec::new();
        if let (true, Some(last)) = (page.more && request.limit > 0, page.items.last()) {
            headers.push(next_link("/v2/_catalog", request.limit, last.as_str(), ""));
        }
        let body = Catalog {
            repositories: page.items.iter().map(|r| r.as_str()).collect(),
        };
        Ok(json(StatusCode::OK, &body, headers))
    }
}
