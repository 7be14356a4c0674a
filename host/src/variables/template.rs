//! Spin's variable templates: literal text with `{{ name }}` references to application
//! variables, e.g. `"https://{{ api_host }}/v1"`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

impl Template {
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| anyhow!("unclosed `{{{{` in template {text:?}"))?;
            let name = after[..end].trim();
            if name.is_empty() {
                bail!("empty `{{{{ }}}}` in template {text:?}");
            }
            crate::manifest::check_snake_id(name)
                .map_err(|e| anyhow!("in template {text:?}: {e}"))?;
            parts.push(Part::Variable(name.to_owned()));
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            bail!("`}}}}` without a matching `{{{{` in template {text:?}");
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The variable names the template refers to, in order (with repeats).
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Substitutes every reference; a name missing from `values` is an error naming it.
    pub fn render(&self, values: &BTreeMap<String, String>) -> anyhow::Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => out.push_str(
                    values
                        .get(name)
                        .ok_or_else(|| anyhow!("no value for application variable `{name}`"))?,
                ),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        [("api_host", "example.com"), ("jwt_secret", "s3cret")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn renders_references_and_literal_text() {
        let t = Template::parse("{{ jwt_secret }}").unwrap();
        assert_eq!(t.render(&values()).unwrap(), "s3cret");
        let t = Template::parse("https://{{api_host}}/v1?k={{  jwt_secret }}").unwrap();
        assert_eq!(
            t.references().collect::<Vec<_>>(),
            ["api_host", "jwt_secret"]
        );
        assert_eq!(
            t.render(&values()).unwrap(),
            "https://example.com/v1?k=s3cret"
        );
        let t = Template::parse("plain text").unwrap();
        assert_eq!(t.references().count(), 0);
        assert_eq!(t.render(&values()).unwrap(), "plain text");
        assert_eq!(Template::parse("").unwrap().render(&values()).unwrap(), "");
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in [
            "{{ api_host",
            "{{ }}",
            "x }} y",
            "{{ Api-Host }}",
            "{{ a b }}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn render_names_a_missing_variable() {
        let t = Template::parse("{{ nope }}").unwrap();
        let err = t.render(&values()).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
