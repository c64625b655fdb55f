//! Reading a stack file: TOML or JSON, snake_case or camelCase keys, `${VAR}` expansion, `envFile`, and
//! errors that name the file and the place (line and column for syntax, the key path otherwise). Nothing is
//! returned unless the whole file is valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use pm_core::{ProcessConfig, RemoteAccessPatch, SettingsUpdate};
use serde_json::{Map, Value};

use crate::stack::keys;

/// The additive entry key that marks a process as created from a stack file (its canonical path).
pub(crate) const PROVENANCE_KEY: &str = "stackFile";

/// A valid stack file.
#[derive(Debug)]
pub(crate) struct Stack {
    /// The file, canonical (also the provenance mark of what it creates).
    pub path: PathBuf,
    /// The processes, in file order.
    pub processes: Vec<ProcessConfig>,
    /// Settings the file sets, with the key that names each (camelCase).
    pub settings: Vec<(String, SettingsUpdate)>,
}

impl Stack {
    /// The provenance mark of processes created from this file.
    pub fn mark(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

/// Canonical path of a stack file (absolute when it does not exist).
pub(crate) fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Reads and checks a stack file, expanding variables from `vars`.
pub(crate) fn load(path: &Path, vars: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Stack> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let path = canonical(path);
    let shown = path.display().to_string();
    let value = parse(&text, &path).with_context(|| format!("{shown} does not parse"))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let stack = read(value, &base, vars).map_err(|err| {
        // The error names the key path; the place of that key in the file is said after it.
        let message = format!("{err:#}");
        match locate(&text, &path, &message) {
            Some((line, column)) => anyhow::format_err!("{message} (line {line}, column {column})"),
            None => err,
        }
        .context(format!("{shown} is not a valid stack file"))
    })?;
    Ok(Stack { path, processes: stack.0, settings: stack.1 })
}

/// Parses TOML (or JSON for `.json` files) into a JSON value; errors carry line and column.
fn parse(text: &str, path: &Path) -> anyhow::Result<Value> {
    if path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json")) {
        return serde_json::from_str(text).map_err(|err| {
            // serde_json ends its message with the position, which comes first here.
            let message = err.to_string();
            let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(message, _)| message);
            anyhow::format_err!("line {}, column {}: {message}", err.line(), err.column())
        });
    }
    toml::from_str::<Value>(text).map_err(|err| {
        let (line, column) = match err.span() {
            Some(span) => line_column(text, span.start),
            None => (0, 0),
        };
        anyhow::format_err!("line {line}, column {column}: {}", err.message().trim_end())
    })
}

/// Line and column of the key an error message begins with (`processes.web.comand: unknown key`), as far as it
/// is found in the file; `None` when the message names no key, or the key is not written there.
fn locate(text: &str, path: &Path, message: &str) -> Option<(usize, usize)> {
    let (key_path, _) = message.split_once(": ")?;
    if key_path.is_empty() || key_path.contains(char::is_whitespace) {
        return None;
    }
    // `args[1]` is found as `args`.
    let segments: Vec<&str> = key_path.split('.').map(|segment| segment.split('[').next().unwrap_or(segment)).collect();
    let spelled = |written: &str, segment: &str| written == segment || keys::camel(written) == segment;
    if path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json")) {
        // Each key after the one before it: good enough for a file serde_json has parsed already.
        let mut from = 0;
        for segment in &segments {
            let found = [segment.to_string(), keys::snake(segment)]
                .iter()
                .filter_map(|name| {
                    let quoted = format!("\"{name}\"");
                    text[from..]
                        .match_indices(&quoted)
                        .map(|(at, _)| from + at)
                        .find(|at| text[at + quoted.len()..].trim_start().starts_with(':'))
                })
                .min()?;
            from = found;
        }
        return Some(line_column(text, from));
    }
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut found = None;
    for (idx, segment) in segments.iter().enumerate() {
        let (key, value) = table.iter().find(|(key, _)| spelled(key.get_ref(), segment))?;
        found = Some(key.span().start);
        if idx + 1 < segments.len() {
            match value.get_ref() {
                toml::de::DeValue::Table(inner) => table = inner,
                _ => break,
            }
        }
    }
    found.map(|offset| line_column(text, offset))
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |it| it.chars().count()) + 1;
    (line, column)
}

type Settings = Vec<(String, SettingsUpdate)>;

fn read(
    value: Value,
    base: &Path,
    vars: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(Vec<ProcessConfig>, Settings)> {
    let value = expand_all(value, "", vars)?;
    let Value::Object(top) = value else { anyhow::bail!("the file must hold a table (an object)") };
    let top_keys: Vec<String> = keys::TOP_LEVEL.iter().map(|key| (*key).to_owned()).collect();
    let mut top = normalise(top, &top_keys, None, "", &["$schema"])?;
    top.remove("$schema");
    let mut settings = Vec::new();
    let strings = |key: &str, value: Value| -> anyhow::Result<Vec<String>> {
        serde_json::from_value(value).with_context(|| format!("{key}: must be a list of strings"))
    };
    for (key, value) in top.iter() {
        let update = match key.as_str() {
            "trustedHosts" => SettingsUpdate::TrustedHosts(strings(key, value.clone())?),
            "executableWhitelist" => SettingsUpdate::ExecutableWhitelist(strings(key, value.clone())?),
            "executableBlacklist" => SettingsUpdate::ExecutableBlacklist(strings(key, value.clone())?),
            "standaloneMode" => SettingsUpdate::StandaloneMode(
                value.as_bool().with_context(|| format!("{key}: must be true or false"))?,
            ),
            "remoteAccess" => {
                let Value::Object(map) = value.clone() else { anyhow::bail!("{key}: must be a table") };
                let known: Vec<String> = keys::REMOTE_ACCESS.iter().map(|key| (*key).to_owned()).collect();
                let map = normalise(map, &known, None, "remoteAccess.", &[])?;
                let patch: RemoteAccessPatch = serde_json::from_value(Value::Object(map)).context(
                    "remoteAccess: allowRemote*, startRemoteAccess and requireToken take true or false, socketUsers \
                     and allowedEnvironment a list of strings, maxUntrustedProcesses a number",
                )?;
                SettingsUpdate::RemoteAccess(patch)
            }
            _ => continue,
        };
        settings.push((key.clone(), update));
    }
    let processes = match top.remove("processes") {
        None => Vec::new(),
        Some(Value::Object(processes)) => {
            processes.into_iter().map(|(id, value)| process(&id, value, base)).collect::<anyhow::Result<Vec<_>>>()?
        }
        Some(_) => anyhow::bail!("processes: must be a table of tables, one per process ([processes.ID])"),
    };
    Ok((processes, settings))
}

/// One `[processes.ID]` table as a checked `ProcessConfig`.
fn process(id: &str, value: Value, base: &Path) -> anyhow::Result<ProcessConfig> {
    let at = format!("processes.{id}");
    pm_core::validate_process_id(id).with_context(|| format!("{at}: not a valid process id"))?;
    let Value::Object(map) = value else { anyhow::bail!("{at}: must be a table") };
    let mut map = normalise(map, &keys::process_keys(), None, &format!("{at}."), &[])?;
    for key in keys::MONITOR_ONLY {
        if map.contains_key(*key) {
            anyhow::bail!("{at}.{key}: set by the monitor itself, a stack file cannot declare it");
        }
    }
    for nested in keys::nested() {
        normalise_nested(&mut map, &nested, &at)?;
    }
    match map.get("id") {
        None => {
            map.insert("id".to_owned(), Value::String(id.to_owned()));
        }
        Some(Value::String(given)) if given == id => {}
        Some(other) => anyhow::bail!("{at}.id: {other} differs from the table's name {id:?}"),
    }
    if !map.contains_key("name") {
        map.insert("name".to_owned(), Value::String(id.to_owned()));
    }
    if let Some(files) = map.remove(keys::ENV_FILE) {
        let files: Vec<String> = match files {
            Value::String(file) => vec![file],
            other => serde_json::from_value(other)
                .with_context(|| format!("{at}.envFile: must be a path or a list of paths"))?,
        };
        let mut env = Map::new();
        for file in files {
            let file = base.join(file);
            let vars = dotenv(&file).with_context(|| format!("{at}.envFile"))?;
            env.extend(vars.into_iter().map(|(key, value)| (key, Value::String(value))));
        }
        match map.get("environment") {
            None => {}
            Some(Value::Object(given)) => env.extend(given.clone()),
            Some(_) => anyhow::bail!("{at}.environment: must be a table of strings"),
        }
        map.insert("environment".to_owned(), Value::Object(env));
    }
    if let Some(Value::String(dir)) = map.get("workingDirectory") {
        if !dir.is_empty() && Path::new(dir).is_relative() {
            let dir = base.join(dir).to_string_lossy().into_owned();
            map.insert("workingDirectory".to_owned(), Value::String(dir));
        }
    }
    let config = config_of(map, &at)?;
    config.validate().with_context(|| at.clone())?;
    Ok(config)
}

/// Deserialises a `ProcessConfig`; a type error names the key that caused it.
fn config_of(map: Map<String, Value>, at: &str) -> anyhow::Result<ProcessConfig> {
    match serde_json::from_value::<ProcessConfig>(Value::Object(map.clone())) {
        Ok(config) => Ok(config),
        Err(err) => {
            for (key, value) in &map {
                let mut probe = Map::new();
                for required in ["id", "name", "command"] {
                    probe.insert(required.to_owned(), Value::String("x".to_owned()));
                }
                probe.insert(key.clone(), value.clone());
                if let Err(err) = serde_json::from_value::<ProcessConfig>(Value::Object(probe)) {
                    anyhow::bail!("{at}.{key}: {err}");
                }
            }
            anyhow::bail!("{at}: {err}")
        }
    }
}

/// Renames snake_case keys to their camelCase names and refuses unknown keys, naming the nearest known one.
/// A key is known when `known` lists it, or `is_field` says so; `allowed` are further keys taken as they are.
fn normalise(
    map: Map<String, Value>,
    known: &[String],
    is_field: Option<fn(&str) -> bool>,
    at: &str,
    allowed: &[&str],
) -> anyhow::Result<Map<String, Value>> {
    let is_known = |key: &str| known.iter().any(|it| it == key) || is_field.is_some_and(|is_field| is_field(key));
    let mut res = Map::new();
    for (key, value) in map {
        let name = if is_known(&key) || allowed.contains(&key.as_str()) {
            key.clone()
        } else if key.contains('_') && is_known(&keys::camel(&key)) {
            keys::camel(&key)
        } else {
            let hint = match keys::nearest(&key, known) {
                Some(nearest) => format!("; did you mean {}?", keys::styled(nearest, &key)),
                None => String::new(),
            };
            anyhow::bail!("{at}{key}: unknown key{hint}");
        };
        if res.contains_key(&name) {
            anyhow::bail!("{at}{key}: given twice (as {name} and {})", keys::snake(&name));
        }
        res.insert(name, value);
    }
    Ok(res)
}

/// Normalises the nested object at `path` (when present and an object).
fn normalise_nested(map: &mut Map<String, Value>, nested: &keys::Nested, at: &str) -> anyhow::Result<()> {
    let path = nested.path;
    let Some((last, parents)) = path.split_last() else { return Ok(()) };
    let mut here = map;
    for parent in parents {
        match here.get_mut(*parent) {
            Some(Value::Object(inner)) => here = inner,
            _ => return Ok(()),
        }
    }
    if let Some(Value::Object(inner)) = here.remove(*last) {
        let inner = normalise(inner, &nested.keys, Some(nested.is_field), &format!("{at}.{}.", path.join(".")), &[])?;
        here.insert((*last).to_owned(), Value::Object(inner));
    }
    Ok(())
}

/// Expands `${VAR}` and `${VAR:-default}` in every string value (not in keys); `$$` is a literal `$`.
fn expand_all(value: Value, at: &str, vars: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Value> {
    Ok(match value {
        Value::String(text) => {
            Value::String(expand(&text, vars).with_context(|| at.trim_start_matches('.').to_owned())?)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(idx, item)| expand_all(item, &format!("{at}[{idx}]"), vars))
                .collect::<anyhow::Result<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| Ok((key.clone(), expand_all(item, &format!("{at}.{key}"), vars)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
        other => other,
    })
}

/// Expands one string.
pub(crate) fn expand(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut res = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        res.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            res.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').with_context(|| format!("unterminated ${{ in {text:?}"))?;
            let expr = &inner[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            let valid = name.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
                && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !valid {
                anyhow::bail!("${{{expr}}} is not a variable reference (${{NAME}} or ${{NAME:-default}})");
            }
            match (vars(name).filter(|value| !value.is_empty() || default.is_none()), default) {
                (Some(value), _) => res.push_str(&value),
                (None, Some(default)) => res.push_str(default),
                (None, None) => anyhow::bail!("${{{name}}} is not set (give a default with ${{{name}:-default}})"),
            }
            rest = &inner[end + 1..];
        } else {
            res.push('$');
            rest = after;
        }
    }
    res.push_str(rest);
    Ok(res)
}

/// Reads a dotenv file: `NAME=value` lines, `#` comments, optional `export `, single quotes literal, double
/// quotes with `\n`, `\"`, `\\` escapes; `${VAR}` expands (from the environment and earlier lines) outside
/// single quotes.
pub(crate) fn dotenv(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut res: BTreeMap<String, String> = BTreeMap::new();
    for (idx, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), idx + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let (name, raw) = line.split_once('=').with_context(|| format!("{}: expected NAME=value", at()))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            anyhow::bail!("{}: {name:?} is not a variable name", at());
        }
        let raw = raw.trim();
        let lookup = |var: &str| res.get(var).cloned().or_else(|| std::env::var(var).ok());
        let value = if let Some(inner) = raw.strip_prefix('\'') {
            inner.strip_suffix('\'').with_context(|| format!("{}: unterminated '", at()))?.to_owned()
        } else if let Some(inner) = raw.strip_prefix('"') {
            let inner = inner.strip_suffix('"').with_context(|| format!("{}: unterminated \"", at()))?;
            let mut unescaped = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(ch) = chars.next() {
                if ch == '\\' {
                    match chars.next() {
                        Some('n') => unescaped.push('\n'),
                        Some('t') => unescaped.push('\t'),
                        Some(other) => unescaped.push(other),
                        None => unescaped.push('\\'),
                    }
                } else {
                    unescaped.push(ch);
                }
            }
            expand(&unescaped, &lookup).with_context(at)?
        } else {
            let value = match raw.find(" #") {
                Some(pos) => raw[..pos].trim_end(),
                None => raw,
            };
            expand(value, &lookup).with_context(at)?
        };
        res.insert(name.to_owned(), value);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8080".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion() {
        let check = |text: &str, expected: &str| assert_eq!(expand(text, &vars).unwrap(), expected, "{text}");
        check("--port=${PORT}", "--port=8080");
        check("${MISSING:-9}", "9");
        check("${EMPTY:-x}", "x");
        check("${PORT:-1}", "8080");
        check("$$HOME and $HOME", "$HOME and $HOME");
        check("${MISSING:-}", "");
        let err = expand("${MISSING}", &vars).unwrap_err().to_string();
        assert!(err.contains("MISSING") && err.contains("not set"), "{err}");
        assert!(expand("${PORT", &vars).is_err());
        assert!(expand("${1X}", &vars).is_err());
    }

    fn load_text(name: &str, text: &str) -> anyhow::Result<Stack> {
        let dir = std::env::temp_dir().join(format!("pm-stack-unit-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let res = load(&path, &vars);
        std::fs::remove_dir_all(&dir).ok();
        res
    }

    #[test]
    fn snake_and_camel_read_alike() {
        let snake = load_text(
            "a.toml",
            "[processes.api]\ncommand = \"/bin/true\"\nworking_directory = \"/tmp\"\nstop_timeout_ms = 5\n\
             [processes.api.restart_policy]\nmax_attempts = 2\n[processes.api.aliveness_check]\nurl = \"http://x\"\n\
             [processes.api.aliveness_check.startup_check]\nfail_action = \"fail\"\n",
        )
        .unwrap();
        let camel = load_text(
            "b.json",
            r#"{"processes": {"api": {"command": "/bin/true", "workingDirectory": "/tmp", "stopTimeoutMs": 5,
                "restartPolicy": {"maxAttempts": 2}, "alivenessCheck": {"url": "http://x",
                "startupCheck": {"failAction": "fail"}}}}}"#,
        )
        .unwrap();
        assert_eq!(snake.processes, camel.processes);
        assert_eq!(snake.processes[0].name, "api");
        assert_eq!(snake.processes[0].restart_policy.as_ref().unwrap().max_attempts, 2);
    }

    #[test]
    fn errors_name_the_place() {
        let err = |name: &str, text: &str| format!("{:#}", load_text(name, text).unwrap_err());
        let message = err("c.toml", "[processes.api]\ncommand = \"/bin/true\"\nargs = [1,\n");
        assert!(message.contains("line 3"), "{message}");
        let message = err("d.json", "{\"processes\": {\n  \"api\": {\"command\": }}}");
        assert!(message.contains("line 2, column"), "{message}");
        let message = err("e.toml", "[processes.api]\ncomand = \"/bin/true\"\n");
        assert!(message.contains("processes.api.comand: unknown key; did you mean command?"), "{message}");
        let message = err("f.toml", "[processes.api]\ncommand = \"x\"\nworking_dir = \"/\"\n");
        assert!(message.contains("did you mean working_directory?"), "{message}");
        let message =
            err("g.toml", "[processes.api]\ncommand = \"x\"\n[processes.api.restart_policy]\nmax_attempt = 1\n");
        assert!(
            message.contains("processes.api.restartPolicy.max_attempt: unknown key; did you mean max_attempts?"),
            "{message}"
        );
        let message = err("h.toml", "[processes.api]\ncommand = \"x\"\nargs = \"y\"\n");
        assert!(message.contains("processes.api.args: invalid type"), "{message}");
        let message = err("i.toml", "[processes.api]\ncommand = \"x\"\nenv_file = \"missing.env\"\n");
        assert!(message.contains("envFile") && message.contains("missing.env"), "{message}");
        let message = err("j.toml", "[processes.api]\ncommand = \"x\"\nargs = [\"${NOPE}\"]\n");
        assert!(message.contains("processes.api.args[0]") && message.contains("NOPE"), "{message}");
        let message = err("k.toml", "trusted_host = []\n");
        assert!(message.contains("did you mean trusted_hosts?"), "{message}");
        let message = err("l.toml", "[processes.api]\ncommand = \"x\"\npartner = true\n");
        assert!(message.contains("partner"), "{message}");
        // Errors about a key say where it is written too.
        let message =
            err("m.toml", "[processes.api]\ncommand = \"x\"\n\n[processes.web]\ncommand = \"y\"\n  comand = \"z\"\n");
        assert!(
            message.contains("processes.web.comand: unknown key; did you mean command? (line 6, column 3)"),
            "{message}"
        );
        let message =
            err("n.toml", "[processes.api]\ncommand = \"x\"\n[processes.api.aliveness_check]\nurl = \"\"\nprot = 1\n");
        assert!(
            message.contains("processes.api.alivenessCheck.prot: unknown key; did you mean port? (line 5, column 1)"),
            "{message}"
        );
        let message = err("o.toml", "[processes.api]\ncommand = \"x\"\nenv_file = \"missing.env\"\n");
        assert!(message.contains("processes.api.envFile: ") && message.ends_with("(line 3, column 1)"), "{message}");
        let message = err("p.json", "{\"processes\": {\"api\": {\"command\": \"x\"},\n  \"web\": {\"command\": \"y\",\n    \"stopTimeoutMs\": \"soon\"}}}");
        assert!(message.contains("processes.web.stopTimeoutMs: invalid type"), "{message}");
        assert!(message.ends_with("(line 3, column 5)"), "{message}");
        let message = err("q.toml", "[processes.api]\ncommand = \"x\"\nargs = [\"a\", \"${NOPE}\"]\n");
        assert!(message.contains("processes.api.args[1]: ") && message.ends_with("(line 3, column 1)"), "{message}");
    }

    #[test]
    fn dotenv_syntax() {
        let dir = std::env::temp_dir().join(format!("pm-stack-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "# comment\nA=1\nexport B = two words # note\nC='${A} literal'\nD=\"x\\ny ${A}\"\nE=${A}-${MISSING:-d}\n\n",
        )
        .unwrap();
        let vars = dotenv(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "${A} literal");
        assert_eq!(vars["D"], "x\ny 1");
        assert_eq!(vars["E"], "1-d");
    }
}
