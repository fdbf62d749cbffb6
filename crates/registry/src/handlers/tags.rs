//! `GET /v2/<name>/tags/list[?n=<n>&last=<tag>]`.

use http::{Response, StatusCode};
use rbuild_oci::RepositoryName;
use serde::Serialize;

use crate::Registry;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::http::{Body, Pagination, json, next_link, query_pairs};
use crate::storage::{BlobStore, MetadataStore, PageRequest};

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a RepositoryName,
    tags: Vec<&'a str>,
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// The page a client's `n` and `last` ask for, capped at the configured maximum.
    pub(super) fn page_request(&self, pagination: Pagination) -> PageRequest {
        let max = self.config.limits.max_page_entries;
        PageRequest {
            after: pagination.last,
            limit: pagination.n.unwrap_or(max).min(max),
        }
    }

    pub(super) async fn tags(
        &self,
        name: &RepositoryName,
        parts: &http::request::Parts,
    ) -> Result<Response<Body>> {
        let request = self.page_request(Pagination::parse(&query_pairs(parts.uri.query()))?);
        let page = self.metadata.tags(name, &request).await?.ok_or_else(|| {
            RegistryError::new(
                ErrorCode::NameUnknown,
                format!("repository {name} is not known to this registry"),
            )
            .with_detail(serde_json::json!({ "name": name }))
        })?;
        let mut headers = Vec::new();
        if let (true, Some(last)) = (page.more && request.limit > 0, page.items.last()) {
            headers.push(next_link(
                &format!("/v2/{name}/tags/list"),
                request.limit,
                last.as_str(),
                "",
            ));
        }
        let body = TagList {
            name,
            tags: page.items.iter().map(|t| t.as_str()).collect(),
        };
        Ok(json(StatusCode::OK, &body, headers))
    }
}
