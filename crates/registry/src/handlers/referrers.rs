//! `GET /v2/<name>/referrers/<digest>[?artifactType=<type>]`: the manifests whose `subject` is
//! the given manifest, as an OCI index.

use http::{Response, StatusCode};
use rbuild_oci::manifest::ImageIndex;
use rbuild_oci::{Descriptor, Digest, RepositoryName, media_type};

use crate::Registry;
use crate::error::Result;
use crate::http::{
    Body, OCI_FILTERS_APPLIED, Pagination, encode_component, json_as, next_link, query_pairs, query_value,
};
use crate::storage::{BlobStore, MetadataStore};

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    pub(super) async fn referrers(
        &self,
        name: &RepositoryName,
        subject: &Digest,
        parts: &http::request::Parts,
    ) -> Result<Response<Body>> {
        let query = query_pairs(parts.uri.query());
        let artifact_type = query_value(&query, "artifactType").filter(|t| !t.is_empty());
        let request = self.page_request(Pagination::parse(&query)?);
        let page = self
            .metadata
            .referrers(name, subject, artifact_type, &request)
            .await?;

        let mut headers = Vec::new();
        if artifact_type.is_some() {
            headers.push((OCI_FILTERS_APPLIED, "artifactType".to_owned()));
        }
        if let (true, Some(last)) = (page.more && request.limit > 0, page.items.last()) {
            let filter = artifact_type
                .map(|t| format!("&artifactType={}", encode_component(t)))
                .unwrap_or_default();
            headers.push(next_link(
                &format!("/v2/{name}/referrers/{subject}"),
                request.limit,
                &last.digest.to_string(),
                &filter,
            ));
        }
        let manifests = page
            .items
            .into_iter()
            .map(|record| Descriptor {
                artifact_type: record.artifact_type,
                annotations: record.annotations,
                ..Descriptor::new(record.media_type, record.digest, record.size)
            })
            .collect();
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: Default::default(),
        };
        Ok(json_as(StatusCode::OK, media_type::OCI_INDEX, &index, headers))
    }
}
