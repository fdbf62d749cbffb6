//! Just enough XML for S3's answers: the text of named elements.
//!
//! S3 responses are flat, attribute-free documents, and the store reads a handful of leaf
//! fields from them (`Key`, `Size`, `UploadId`, `Code`...), so a search for `<Tag>...</Tag>`
//! is exact; a parser crate would add compile time for nothing.

/// The contents of every `<tag>...</tag>` element, in order (not nested in themselves).
pub fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// The contents of the first `<tag>...</tag>` element.
pub fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    elements(xml, tag).into_iter().next()
}

/// Text with the five predefined entities resolved.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

/// Text safe inside an element.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listed_fields() {
        let body = "<ListBucketResult><Contents><Key>a&amp;b</Key><Size>3</Size></Contents>\
                    <Contents><Key>c</Key><Size>4</Size></Contents><IsTruncated>false</IsTruncated></ListBucketResult>";
        let contents = elements(body, "Contents");
        assert_eq!(contents.len(), 2);
        assert_eq!(element(contents[0], "Key").map(unescape).as_deref(), Some("a&b"));
        assert_eq!(element(contents[1], "Size"), Some("4"));
        assert_eq!(element(body, "NextContinuationToken"), None);
        assert_eq!(unescape(&escape("\"<&>\"")), "\"<&>\"");
    }
}
