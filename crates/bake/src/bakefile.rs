//! docker-bake.hcl and docker-bake.json read into the same blocks of unevaluated HCL
//! expressions, as buildx reads both through HCL: a JSON string holding `${` becomes a
//! template, so interpolation means the same in either format.

use std::path::{Path, PathBuf};

use hcl::expr::{Expression, ObjectKey, TemplateExpr};

use crate::BakeError;

/// What a block declares.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Variable,
    Group,
    Target,
}

/// One `variable`, `group` or `target` block (a top-level attribute is a variable whose
/// default it is, as in buildx).
pub(crate) struct Block {
    pub kind: Kind,
    pub name: String,
    pub attrs: Vec<(String, Expression)>,
}

/// One bake file's blocks, in file order.
pub(crate) struct BakeFile {
    pub path: PathBuf,
    pub blocks: Vec<Block>,
}

impl BakeFile {
    /// Where a block's attribute is, for messages: `target "app" tags` (`target "app"` for
    /// the block itself, key empty).
    pub fn at(&self, block: &Block, key: &str) -> String {
        let kind = match block.kind {
            Kind::Variable => "variable",
            Kind::Group => "group",
            Kind::Target => "target",
        };
        match key {
            "" => format!("{kind} {:?}", block.name),
            key => format!("{kind} {:?} {key}", block.name),
        }
    }
}

/// Parses docker-bake.hcl syntax.
pub(crate) fn parse_hcl(path: &Path, text: &str) -> Result<BakeFile, BakeError> {
    let body = hcl::parse(text).map_err(|source| BakeError::Hcl {
        path: path.to_owned(),
        source,
    })?;
    let mut blocks = Vec::new();
    for structure in body.into_inner() {
        match structure {
            hcl::Structure::Attribute(attr) => blocks.push(Block {
                kind: Kind::Variable,
                name: attr.key.to_string(),
                attrs: vec![("default".to_owned(), attr.expr)],
            }),
            hcl::Structure::Block(block) => {
                let kind = block_kind(path, block.identifier())?;
                let [label] = block.labels() else {
                    return Err(BakeError::Type {
                        path: path.to_owned(),
                        at: format!("{} block", block.identifier()),
                        expected: "exactly one name",
                    });
                };
                let name = label.as_str().to_owned();
                let mut attrs = Vec::new();
                for inner in block.body.into_inner() {
                    match inner {
                        hcl::Structure::Attribute(attr) => attrs.push((attr.key.to_string(), attr.expr)),
                        hcl::Structure::Block(nested) => {
                            return Err(BakeError::Unsupported {
                                path: path.to_owned(),
                                at: format!("{} {name:?}", block.identifier),
                                key: nested.identifier.to_string(),
                            });
                        }
                    }
                }
                blocks.push(Block { kind, name, attrs });
            }
        }
    }
    Ok(BakeFile {
        path: path.to_owned(),
        blocks,
    })
}

/// Parses docker-bake.json: `{"variable": {...}, "group": {...}, "target": {...}}`.
pub(crate) fn parse_json(path: &Path, text: &str) -> Result<BakeFile, BakeError> {
    let root: serde_json::Value = serde_json::from_str(text).map_err(|source| BakeError::Json {
        path: path.to_owned(),
        source,
    })?;
    let expected = |at: &str, expected| BakeError::Type {
        path: path.to_owned(),
        at: at.to_owned(),
        expected,
    };
    let root = root
        .as_object()
        .ok_or_else(|| expected("the file", "an object"))?;
    let mut blocks = Vec::new();
    for (key, value) in root {
        if !matches!(key.as_str(), "variable" | "group" | "target" | "function") {
            blocks.push(Block {
                kind: Kind::Variable,
                name: key.clone(),
                attrs: vec![("default".to_owned(), expression(value))],
            });
            continue;
        }
        let kind = block_kind(path, key)?;
        let named = value
            .as_object()
            .ok_or_else(|| expected(key, "an object of names"))?;
        for (name, body) in named {
            let body = body
                .as_object()
                .ok_or_else(|| expected(&format!("{key} {name:?}"), "an object"))?;
            let attrs = body.iter().map(|(k, v)| (k.clone(), expression(v))).collect();
            blocks.push(Block {
                kind,
                name: name.clone(),
                attrs,
            });
        }
    }
    Ok(BakeFile {
        path: path.to_owned(),
        blocks,
    })
}

fn block_kind(path: &Path, identifier: &str) -> Result<Kind, BakeError> {
    match identifier {
        "variable" => Ok(Kind::Variable),
        "group" => Ok(Kind::Group),
        "target" => Ok(Kind::Target),
        "function" => Err(BakeError::Unsupported {
            path: path.to_owned(),
            at: "the file".to_owned(),
            key: "function".to_owned(),
        }),
        other => Err(BakeError::UnknownKey {
            path: path.to_owned(),
            at: "the file".to_owned(),
            key: other.to_owned(),
        }),
    }
}

/// A JSON value as the HCL expression it stands for; strings with `${` or `%{` are
/// templates, taken as they are (JSON already decoded their escapes, and the template
/// evaluator decodes none).
fn expression(value: &serde_json::Value) -> Expression {
    match value {
        serde_json::Value::Null => Expression::Null,
        serde_json::Value::Bool(b) => Expression::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Expression::Number(i.into()),
            (None, Some(f)) => hcl::Number::from_f64(f).map_or(Expression::Null, Expression::Number),
            (None, None) => Expression::Null,
        },
        serde_json::Value::String(s) if s.contains("${") || s.contains("%{") => {
            Expression::TemplateExpr(Box::new(TemplateExpr::QuotedString(s.clone())))
        }
        serde_json::Value::String(s) => Expression::String(s.clone()),
        serde_json::Value::Array(items) => Expression::Array(items.iter().map(expression).collect()),
        serde_json::Value::Object(map) => Expression::Object(
            map.iter()
                .map(|(k, v)| {
                    (
                        ObjectKey::Expression(Expression::String(k.clone())),
                        expression(v),
                    )
                })
                .collect(),
        ),
    }
}
