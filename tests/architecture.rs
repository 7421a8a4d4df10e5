//! The layer order written in `lib.rs` holds: each top-level module of `src/` imports only modules
//! listed before it, so a cycle or an upward dependency fails here naming the file and line.
//!
//! The check reads the source as text: comments and the insides of string and char literals are
//! blanked, then every `crate::x` path (in `use`, `pub use`, grouped `use crate::{…}` over any number
//! of lines, or in an expression) counts as an import of `x`. A path written inside a string (such
//! as serde's `with = "crate::x"`) is not seen.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Upward imports that another change is removing now. Each must still exist (an entry whose import
/// is gone fails the test), so the list can only shrink until it is empty.
const NOT_YET_REMOVED: &[(&str, &str)] = &[];

#[test]
fn each_module_imports_only_modules_below_it_in_the_layer_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check(&src, NOT_YET_REMOVED);
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn planted_upward_imports_are_each_reported_and_comments_and_strings_are_not() {
    let dir = planted(&[
        (
            "lib.rs",
            "//! A planted crate.\n\
             //!\n\
             //! Layers, lowest first: low, mid,\n\
             //! high.\n\
             \n\
             pub mod high;\n\
             pub mod low;\n\
             mod mid;\n",
        ),
        (
            "low.rs",
            r##"//! Names crate::high in a doc comment, which imports nothing.
use crate::high::Thing;
use crate::{
    low::Own,
    mid::Helper,
};
/* a block comment naming crate::high::f() /* nested */ crate::mid */
pub fn f() -> usize {
    let s = "crate::high::g() \" crate::mid";
    let r = r#"crate::mid "quoted" crate::high"#;
    let c = '"';
    let e = '\'';
    let l: &'static str = s; // crate::high in a trailing comment
    crate::high::g(s, r, c, e, l)
}
"##,
        ),
        (
            "mid/mod.rs",
            "pub mod inner;\nuse crate::low::f;\npub use crate::high::Thing;\n",
        ),
        ("mid/inner.rs", "use crate::{low, high::{a, b}};\n"),
        ("high.rs", "pub use crate::{low::f, mid};\n"),
    ]);
    assert_eq!(
        check(dir.path(), &[]),
        [
            "low → high: src/low.rs:2 imports crate::high, which is above low in lib.rs's layer order",
            "low → mid: src/low.rs:5 imports crate::mid, which is above low in lib.rs's layer order",
            "low → high: src/low.rs:14 imports crate::high, which is above low in lib.rs's layer order",
            "mid → high: src/mid/inner.rs:1 imports crate::high, which is above mid in lib.rs's layer order",
            "mid → high: src/mid/mod.rs:3 imports crate::high, which is above mid in lib.rs's layer order",
        ]
    );
    // An allowed edge is not reported, wherever it occurs.
    assert_eq!(
        check(dir.path(), &[("low", "high"), ("low", "mid"), ("mid", "high")]),
        [] as [&str; 0]
    );
}

#[test]
fn a_layer_list_that_disagrees_with_the_modules_or_a_stale_allowance_is_reported() {
    let dir = planted(&[
        (
            "lib.rs",
            "//! Layers, lowest first: low, ghost, high, low.\npub mod high;\npub mod low;\nmod extra;\n",
        ),
        ("low.rs", ""),
        ("high.rs", "use crate::low;\n"),
        ("extra.rs", ""),
    ]);
    assert_eq!(
        check(dir.path(), &[("low", "high"), ("high", "low")]),
        [
            "lib.rs's layer list names `low` twice",
            "lib.rs declares `mod extra`, which its layer list does not name; add it after the modules it imports",
            "lib.rs's layer list names `ghost`, which lib.rs does not declare",
            "`low → high` is allowed as not yet removed, but no file imports upward along it any more; take it \
             off NOT_YET_REMOVED",
            "`high → low` is allowed as not yet removed, but no file imports upward along it any more; take it \
             off NOT_YET_REMOVED",
        ]
    );

    let dir = planted(&[("lib.rs", "//! No layers here.\npub mod low;\n"), ("low.rs", "")]);
    assert_eq!(
        check(dir.path(), &[]),
        ["lib.rs has no `//! Layers, lowest first: a, b, …` line naming its modules lowest first"]
    );
}

/// A crate's `src/` holding `files` (paths relative to it), in the target directory.
fn planted(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("the parent directory");
        fs::write(path, text).expect("the planted file");
    }
    dir
}

/// Everything wrong with the layering of the crate whose sources are in `src`: the layer list and
/// `lib.rs`'s modules disagreeing, imports of a module above (unless `allowed`), and allowances
/// that no import needs any more.
fn check(src: &Path, allowed: &[(&str, &str)]) -> Vec<String> {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let Some(layers) = layer_list(&lib) else {
        return vec!["lib.rs has no `//! Layers, lowest first: a, b, …` line naming its modules lowest first".into()];
    };
    let mut problems = Vec::new();
    let mut rank = BTreeMap::new();
    for (i, name) in layers.iter().enumerate() {
        if *rank.entry(name.as_str()).or_insert(i) != i {
            problems.push(format!("lib.rs's layer list names `{name}` twice"));
        }
    }
    let declared = declared_modules(&code_only(&lib));
    for name in declared.iter().filter(|m| !rank.contains_key(m.as_str())) {
        problems.push(format!(
            "lib.rs declares `mod {name}`, which its layer list does not name; add it after the modules it imports"
        ));
    }
    for name in rank.keys().filter(|m| !declared.contains(**m)) {
        problems.push(format!(
            "lib.rs's layer list names `{name}`, which lib.rs does not declare"
        ));
    }

    let mut upward_seen = BTreeSet::new();
    for path in rust_files(src) {
        let relative = path.strip_prefix(src).expect("under src");
        let shown = format!("src/{}", relative.display());
        let first = relative.components().next().expect("a component");
        let module = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = rank.get(module.as_str()) else {
            continue; // reported above when lib.rs declares it
        };
        let text = fs::read_to_string(&path).expect("a source file");
        for (line, target) in imports(&code_only(&text)) {
            let Some(&theirs) = rank.get(target.as_str()) else {
                continue; // an item of the crate root, or a module the compiler would not find
            };
            if theirs <= own {
                continue;
            }
            upward_seen.insert((module.clone(), target.clone()));
            if !allowed.contains(&(module.as_str(), target.as_str())) {
                problems.push(format!(
                    "{module} → {target}: {shown}:{line} imports crate::{target}, which is above {module} in \
                     lib.rs's layer order"
                ));
            }
        }
    }
    for (from, to) in allowed {
        if !upward_seen.contains(&(from.to_string(), to.to_string())) {
            problems.push(format!(
                "`{from} → {to}` is allowed as not yet removed, but no file imports upward along it any more; \
                 take it off NOT_YET_REMOVED"
            ));
        }
    }
    problems
}

/// The names after `Layers, lowest first:` in `lib.rs`'s docs; the list may go on over the next
/// `//!` lines while a line ends with a comma, and may end with a full stop.
fn layer_list(lib: &str) -> Option<Vec<String>> {
    let mut docs = lib.lines().map_while(|l| l.trim_start().strip_prefix("//!"));
    let mut list = docs
        .find_map(|l| l.trim().strip_prefix("Layers, lowest first:"))?
        .trim()
        .to_string();
    while list.ends_with(',') {
        list.push(' ');
        list.push_str(docs.next().unwrap_or_default().trim());
    }
    Some(
        list.trim_end_matches('.')
            .split(',')
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .collect(),
    )
}

/// The modules `lib.rs` declares: `mod x;`, `pub mod x;`, `pub(crate) mod x;` (or with a body).
fn declared_modules(lib_code: &str) -> BTreeSet<String> {
    lib_code
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = match line.strip_prefix("pub") {
                Some(rest) if rest.starts_with('(') => &rest[rest.find(')')? + 1..],
                Some(rest) => rest,
                None => line,
            };
            let name = rest.trim_start().strip_prefix("mod ")?;
            let name = name.trim_end_matches([';', '{', ' ']);
            name.chars().all(is_ident).then(|| name.to_string())
        })
        .collect()
}

/// Every `.rs` file under `dir`, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("a source directory")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `text` with comments and the insides of string and char literals blanked (line breaks kept,
/// so line numbers still hold).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let after_ident = i > 0 && is_ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            // Block comments nest.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if let Some((open, hashes)) = (!after_ident).then(|| raw_string_at(&c, i)).flatten() {
            // `r"…"`, `r#"…"#`, `br"…"`: no escapes; ends at a quote and as many `#`.
            out.extend(&c[i..open]);
            i = open;
            let closes = |j: usize| c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#'));
            while i < c.len() && !closes(i) {
                blank(&mut out, c[i]);
                i += 1;
            }
            let end = (i + 1 + hashes).min(c.len());
            out.extend(&c[i..end]);
            i = end;
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                out.push('"');
                i += 1;
            }
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal (`'x'`, `'"'`, `'\''`, `'\u{1F600}'`); a lifetime has no closing quote.
            out.push('\'');
            i += 1;
            if c[i] == '\\' {
                out.push_str("  ");
                i += 2;
            }
            while i < c.len() && c[i] != '\'' {
                blank(&mut out, c[i]);
                i += 1;
            }
            if i < c.len() {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Where a raw string starting at `i` opens (the index after its quote) and how many `#` close it.
fn raw_string_at(c: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if matches!(c.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&h| h == '#').count();
    j += hashes;
    (c.get(j) == Some(&'"')).then_some((j + 1, hashes))
}

/// The top-level modules `code` names through `crate::`, each with the line (from 1) it is named on.
fn imports(code: &str) -> Vec<(usize, String)> {
    let c: Vec<char> = code.chars().collect();
    let line_at = |i: usize| 1 + c[..i].iter().filter(|&&ch| ch == '\n').count();
    let skip_space = |mut i: usize| {
        while i < c.len() && c[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let ident_at = |i: usize| c[i..].iter().take_while(|&&ch| is_ident(ch)).collect::<String>();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&c, i, "crate") {
        i = at + "crate".len();
        let prefixed = at > 0 && (is_ident(c[at - 1]) || c[at - 1] == '$');
        if prefixed || c.get(i).is_some_and(|&ch| is_ident(ch)) {
            continue;
        }
        let j = skip_space(i);
        if c.get(j) != Some(&':') || c.get(j + 1) != Some(&':') {
            continue;
        }
        let j = skip_space(j + 2);
        if c.get(j) != Some(&'{') {
            found.push((line_at(j), ident_at(j)));
            continue;
        }
        // A group: the first name of each item at depth one.
        let mut depth = 0;
        let mut item_start = true;
        let mut k = j;
        while k < c.len() {
            match c[k] {
                '{' => {
                    depth += 1;
                    item_start = depth == 1;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => item_start = true,
                ch if item_start && is_ident(ch) => {
                    found.push((line_at(k), ident_at(k)));
                    item_start = false;
                }
                _ => {}
            }
            k += 1;
        }
        i = k;
    }
    found.retain(|(_, name)| !name.is_empty() && name != "self");
    found
}

fn find(c: &[char], from: usize, word: &str) -> Option<usize> {
    let word: Vec<char> = word.chars().collect();
    (from..c.len().saturating_sub(word.len() - 1)).find(|&i| c[i..].starts_with(&word))
}
