//! From a scenario file to the flat list of steps the executor runs: `include` steps replaced
//! by the steps of their step library file, `${variables}` resolved.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::library::Library;
use crate::scenario::{self, LoadError, LoadedScenario, Step};

/// Includes nest at most this deep (a file including itself is an error, not a hang).
const MAX_INCLUDE_DEPTH: usize = 4;

/// One step ready to run, with where it was written (for reports).
#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub step: Step,
    /// `file:line`.
    pub origin: String,
    /// Variables of the include it came from (on top of the environment's).
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    steps: Vec<Spanned<Step>>,
}

/// Flattens a scenario's steps; errors name the file, line and column.
pub fn expand(loaded: &LoadedScenario) -> Result<Vec<PlannedStep>, LoadError> {
    let text = std::fs::read_to_string(&loaded.path).unwrap_or_default();
    let lib = Library::for_scenario(&loaded.path);
    let mut out = Vec::new();
    expand_into(
        &loaded.path,
        &text,
        &loaded.scenario.steps,
        &lib,
        &BTreeMap::new(),
        0,
        &mut out,
    )?;
    Ok(out)
}

fn expand_into(
    path: &Path,
    text: &str,
    steps: &[Spanned<Step>],
    lib: &Library,
    vars: &BTreeMap<String, String>,
    depth: usize,
    out: &mut Vec<PlannedStep>,
) -> Result<(), LoadError> {
    for step in steps {
        let (line, column) = scenario::line_column(text, step.span().start);
        let Step::Include(include) = step.get_ref() else {
            out.push(PlannedStep {
                step: step.get_ref().clone(),
                origin: format!("{}:{line}", path.display()),
                vars: vars.clone(),
            });
            continue;
        };
        let name = include.file.get_ref();
        let at_include = |message: String| LoadError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(at_include(format!(
                "includes nest deeper than {MAX_INCLUDE_DEPTH} (does {name} include itself?)"
            )));
        }
        let included = lib.find(name).map_err(at_include)?;
        let (file, text) = (&included.origin, &included.text);
        let parsed: StepFile = toml::from_str(text).map_err(|e| {
            let (line, column) = scenario::line_column(text, e.span().map_or(0, |s| s.start));
            LoadError::Invalid {
                path: file.clone(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        scenario::validate_steps(file, text, &parsed.steps)?;
        let mut inner = vars.clone();
        inner.extend(include.vars.clone());
        expand_into(file, text, &parsed.steps, lib, &inner, depth + 1, out)?;
    }
    Ok(())
}

/// `${name}` replaced from `vars`; an unknown name is an error naming the known ones.
pub fn substitute(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated ${{ in {template:?}"));
        };
        let name = &after[..end];
        let value = vars.get(name).ok_or_else(|| {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            format!("unknown variable ${{{name}}}; known: {}", known.join(", "))
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_known_and_names_unknown_variables() {
        let vars = BTreeMap::from([("broker.port".to_owned(), "8883".to_owned())]);
        assert_eq!(
            substitute("AT+MQTTCONN=0,\"h\",${broker.port},1", &vars).as_deref(),
            Ok("AT+MQTTCONN=0,\"h\",8883,1")
        );
        let error = substitute("${nope}", &vars).unwrap_err();
        assert!(
            error.contains("${nope}") && error.contains("broker.port"),
            "{error}"
        );
        assert!(substitute("${open", &vars).is_err());
    }
}
