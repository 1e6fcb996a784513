//! Which imports a module's code can call: a call graph over the code section, walked from every
//! function a host can enter. `host-sim info` uses it to tell an import that traps when its path
//! runs from one the module only declares (the proxy-wasm Rust SDK imports every host function
//! whether the filter calls it or not).
//!
//! The answer errs on the side of "reachable", never the other way:
//! - `call` and `return_call` are exact edges.
//! - An indirect call (`call_indirect`, `return_call_indirect`, `call_ref`, `return_call_ref`) may
//!   reach every function the module can take a reference to: each element-segment entry and each
//!   `ref.func` target (in code, global initialisers and element expressions). When the module's
//!   types are plain (no declared supertypes or open types, one type per recursion group, no typed
//!   references in signatures), the candidates are narrowed to those whose signature equals the
//!   call's, which is the core spec's type equivalence for such types; otherwise every candidate
//!   counts.
//! - Roots are the exported functions and the start function; when a table or global is imported
//!   or exported, or an imported or exported function's signature carries a reference, the host
//!   can get hold of a function reference, so every referenceable function is a root too. A host
//!   function enters the module only through exports, so an import is a leaf.
//!
//! The module is untrusted input: every index is checked against what the module declares,
//! malformed bytes give a [`ReachabilityError`], never a panic, and the walk is an iterative
//! breadth-first search that visits each function once (no recursion, however deep the chain).

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use wasmparser::{
    CompositeInnerType, ElementItems, ExternalKind, FuncType, Name, Operator, Parser, Payload, TypeRef, ValType,
};

/// Why a module's call graph could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachabilityError {
    /// The bytes are not a binary core module, or a section does not parse.
    #[error("malformed module at byte {offset}: {message}")]
    Malformed {
        /// Byte offset of the problem in the module.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// The sections parse but refer to things that do not exist.
    #[error("invalid module: {0}")]
    Invalid(String),
}

impl From<wasmparser::BinaryReaderError> for ReachabilityError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        ReachabilityError::Malformed {
            offset: e.offset(),
            message: e.message().to_string(),
        }
    }
}

/// Whether code can call one function import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReach {
    /// `module.name`.
    pub import: String,
    /// Whether some path from a root calls it.
    pub reachable: bool,
    /// The root of the shortest such path, e.g. `export proxy_on_done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The functions on that path, root first, the import last (long paths keep their two ends
    /// around a `…`). Functions are named by the module's name section, else by export, else as
    /// `func[N]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
}

/// The call graph's verdict on a module's function imports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reachability {
    /// Functions in the module, imported and defined.
    pub functions: usize,
    /// How many of them some root can reach (roots included).
    pub reachable_functions: usize,
    /// Whether indirect-call targets were narrowed by signature (see the module docs).
    pub indirect_calls_typed: bool,
    /// Each function import, in import order.
    pub imports: Vec<ImportReach>,
}

impl Reachability {
    /// Whether any import named `module.name` is reachable; `None` when there is no such import.
    pub fn is_reachable(&self, import: &str) -> Option<bool> {
        let mut found = None;
        for item in self.imports.iter().filter(|i| i.import == import) {
            found = Some(found.unwrap_or(false) || item.reachable);
        }
        found
    }

    /// The first reachable import named `module.name`.
    pub fn reach_of(&self, import: &str) -> Option<&ImportReach> {
        self.imports.iter().find(|i| i.import == import && i.reachable)
    }
}

/// Longest function name kept (names come from the untrusted name section).
const NAME_MAX: usize = 160;
/// Paths longer than this keep their first and last halves.
const PATH_MAX: usize = 24;

/// A root of the walk, for the `from` of a reachable import.
#[derive(Clone)]
enum Root {
    Export(String),
    Start,
    ExternalReference,
}

impl Root {
    fn describe(&self) -> String {
        match self {
            Root::Export(name) => format!("export {name}"),
            Root::Start => "the start function".to_string(),
            Root::ExternalReference => {
                "a function reference the host can reach (table, global or signature)".to_string()
            }
        }
    }
}

/// What the sections say, before the walk.
#[derive(Default)]
struct ModuleFacts {
    /// Per type index: the function type, `None` for a struct or array type.
    types: Vec<Option<FuncType>>,
    /// Whether signature equality is the module's type equivalence (see the module docs).
    plain_types: bool,
    /// Per function index, its type index.
    function_types: Vec<u32>,
    /// `module.name` of each function import (function indices `0..len`).
    import_names: Vec<String>,
    /// A table, global, or reference-carrying import exists.
    references_escape: bool,
    exports: Vec<(String, u32)>,
    start: Option<u32>,
    /// Functions the module can make a reference to (element segments, `ref.func`).
    referenceable: Vec<u32>,
    /// Per defined function (in code order): direct callees and the type indices of its
    /// indirect calls.
    bodies: Vec<Body>,
    names: HashMap<u32, String>,
}

#[derive(Default)]
struct Body {
    calls: Vec<u32>,
    indirect_types: Vec<u32>,
}

/// Builds the call graph of a binary core module and reports, for each function import, whether
/// some path from a root calls it.
pub fn analyze(bytes: &[u8]) -> Result<Reachability, ReachabilityError> {
    let facts = read_module(bytes)?;
    facts.check()?;
    Ok(facts.walk())
}

fn has_reference(ty: &FuncType) -> bool {
    ty.params()
        .iter()
        .chain(ty.results())
        .any(|v| matches!(v, ValType::Ref(_)))
}

fn has_typed_reference(ty: &FuncType) -> bool {
    ty.params()
        .iter()
        .chain(ty.results())
        .any(|v| matches!(v, ValType::Ref(r) if r.type_index().is_some()))
}

fn read_module(bytes: &[u8]) -> Result<ModuleFacts, ReachabilityError> {
    let mut facts = ModuleFacts {
        plain_types: true,
        ..ModuleFacts::default()
    };
    // Type indices of the signatures the host sees (imported and exported functions).
    let mut host_visible_types: Vec<u32> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { encoding, range, .. } if encoding != wasmparser::Encoding::Module => {
                return Err(ReachabilityError::Malformed {
                    offset: range.start,
                    message: "a component, not a core module".into(),
                });
            }
            Payload::TypeSection(reader) => {
                for group in reader {
                    let group = group?;
                    let several = group.types().len() > 1;
                    for sub in group.types() {
                        if several || !sub.is_final || sub.supertype_idx.is_some() {
                            facts.plain_types = false;
                        }
                        match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => {
                                if has_typed_reference(f) {
                                    facts.plain_types = false;
                                }
                                facts.types.push(Some(f.clone()));
                            }
                            _ => facts.types.push(None),
                        }
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import?;
                    match import.ty {
                        TypeRef::Func(ty) | TypeRef::FuncExact(ty) => {
                            host_visible_types.push(ty);
                            facts.function_types.push(ty);
                            facts.import_names.push(format!("{}.{}", import.module, import.name));
                        }
                        TypeRef::Table(_) | TypeRef::Global(_) => facts.references_escape = true,
                        TypeRef::Memory(_) | TypeRef::Tag(_) => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    facts.function_types.push(ty?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export?;
                    match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => {
                            facts.exports.push((export.name.to_string(), export.index));
                        }
                        ExternalKind::Table | ExternalKind::Global => facts.references_escape = true,
                        ExternalKind::Memory | ExternalKind::Tag => {}
                    }
                }
            }
            Payload::StartSection { func, .. } => facts.start = Some(func),
            Payload::GlobalSection(reader) => {
                for global in reader {
                    collect_ref_funcs(global?.init_expr.get_operators_reader(), &mut facts.referenceable)?;
                }
            }
            Payload::ElementSection(reader) => {
                for element in reader {
                    match element?.items {
                        ElementItems::Functions(funcs) => {
                            for f in funcs {
                                facts.referenceable.push(f?);
                            }
                        }
                        ElementItems::Expressions(_, exprs) => {
                            for expr in exprs {
                                collect_ref_funcs(expr?.get_operators_reader(), &mut facts.referenceable)?;
                            }
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut reader = body.get_operators_reader()?;
                let mut out = Body::default();
                while !reader.eof() {
                    match reader.read()? {
                        Operator::Call { function_index } | Operator::ReturnCall { function_index } => {
                            out.calls.push(function_index)
                        }
                        Operator::CallIndirect { type_index, .. }
                        | Operator::ReturnCallIndirect { type_index, .. }
                        | Operator::CallRef { type_index }
                        | Operator::ReturnCallRef { type_index } => out.indirect_types.push(type_index),
                        Operator::RefFunc { function_index } => facts.referenceable.push(function_index),
                        _ => {}
                    }
                }
                out.calls.sort_unstable();
                out.calls.dedup();
                out.indirect_types.sort_unstable();
                out.indirect_types.dedup();
                facts.bodies.push(out);
            }
            Payload::CustomSection(section) => {
                // A malformed name section is ignored, as engines do (it is only for display).
                if let wasmparser::KnownCustom::Name(reader) = section.as_known() {
                    read_function_names(reader, &mut facts.names);
                }
            }
            _ => {}
        }
    }
    // Function signatures the host sees: a reference in one hands the host a function reference.
    for (_, index) in &facts.exports {
        if let Some(&ty) = facts.function_types.get(*index as usize) {
            host_visible_types.push(ty);
        }
    }
    if host_visible_types
        .iter()
        .any(|&ty| matches!(facts.types.get(ty as usize), Some(Some(f)) if has_reference(f)))
    {
        facts.references_escape = true;
    }
    facts.referenceable.sort_unstable();
    facts.referenceable.dedup();
    Ok(facts)
}

fn collect_ref_funcs(mut reader: wasmparser::OperatorsReader<'_>, out: &mut Vec<u32>) -> Result<(), ReachabilityError> {
    while !reader.eof() {
        if let Operator::RefFunc { function_index } = reader.read()? {
            out.push(function_index);
        }
    }
    Ok(())
}

fn read_function_names(reader: wasmparser::NameSectionReader<'_>, names: &mut HashMap<u32, String>) {
    for name in reader {
        let Ok(Name::Function(map)) = name else { continue };
        for naming in map.into_iter().map_while(Result::ok) {
            names.entry(naming.index).or_insert_with(|| display_name(naming.name));
        }
    }
}

/// A name fit for a terminal: control characters escaped, at most [`NAME_MAX`] characters.
fn display_name(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == NAME_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Marks a root in [`Walk::reached`].
const NO_PARENT: u32 = u32::MAX;

/// The breadth-first walk's state: per function, the root it was first reached from and the
/// function that called it ([`NO_PARENT`] at a root); the functions still to expand.
struct Walk {
    reached: Vec<Option<(usize, u32)>>,
    queue: VecDeque<u32>,
}

impl Walk {
    fn visit(&mut self, f: u32, root: usize, parent: u32) {
        if let Some(slot @ None) = self.reached.get_mut(f as usize) {
            *slot = Some((root, parent));
            self.queue.push_back(f);
        }
    }
}

impl ModuleFacts {
    fn function_count(&self) -> usize {
        self.function_types.len()
    }

    /// Every index the graph uses exists; the code section has one body per defined function.
    fn check(&self) -> Result<(), ReachabilityError> {
        let count = self.function_count();
        let defined = count.saturating_sub(self.import_names.len());
        if self.bodies.len() != defined {
            return Err(ReachabilityError::Invalid(format!(
                "{defined} functions declared but {} bodies in the code section",
                self.bodies.len()
            )));
        }
        // `what` names the referrer; it is only built for the error.
        let function = |what: &dyn Fn() -> String, index: u32| {
            if (index as usize) < count {
                Ok(())
            } else {
                Err(ReachabilityError::Invalid(format!(
                    "{} refers to function {index}, but the module has {count}",
                    what()
                )))
            }
        };
        let func_type = |what: &dyn Fn() -> String, index: u32| match self.types.get(index as usize) {
            Some(Some(_)) => Ok(()),
            _ => Err(ReachabilityError::Invalid(format!(
                "{} refers to type {index}, which is not a function type of the module",
                what()
            ))),
        };
        for (i, &ty) in self.function_types.iter().enumerate() {
            func_type(&|| format!("function {i}"), ty)?;
        }
        for (name, index) in &self.exports {
            function(&|| format!("export {}", display_name(name)), *index)?;
        }
        if let Some(start) = self.start {
            function(&|| "the start section".to_string(), start)?;
        }
        for &f in &self.referenceable {
            function(&|| "a function reference".to_string(), f)?;
        }
        for (i, body) in self.bodies.iter().enumerate() {
            let what = || format!("function {}", i + self.import_names.len());
            for &callee in &body.calls {
                function(&what, callee)?;
            }
            for &ty in &body.indirect_types {
                func_type(&what, ty)?;
            }
        }
        Ok(())
    }

    fn name_of(&self, index: u32) -> String {
        if let Some(import) = self.import_names.get(index as usize) {
            return import.clone();
        }
        if let Some(name) = self.names.get(&index) {
            return name.clone();
        }
        match self.exports.iter().find(|(_, i)| *i == index) {
            Some((name, _)) => display_name(name),
            None => format!("func[{index}]"),
        }
    }

    /// Breadth-first from the roots; `check` has run, so every index is in range.
    fn walk(&self) -> Reachability {
        let count = self.function_count();
        let imported = self.import_names.len();
        let mut roots: Vec<Root> = Vec::new();
        let mut walk = Walk {
            reached: vec![None; count],
            queue: VecDeque::new(),
        };
        for (name, index) in &self.exports {
            roots.push(Root::Export(display_name(name)));
            walk.visit(*index, roots.len() - 1, NO_PARENT);
        }
        if let Some(start) = self.start {
            roots.push(Root::Start);
            walk.visit(start, roots.len() - 1, NO_PARENT);
        }
        if self.references_escape && !self.referenceable.is_empty() {
            roots.push(Root::ExternalReference);
            for &f in &self.referenceable {
                walk.visit(f, roots.len() - 1, NO_PARENT);
            }
        }

        // Indirect-call candidates, grouped by signature when that is sound (else all in one
        // group); each group is handed out once, so the walk stays linear in the module's size.
        let typed = self.plain_types;
        let mut canonical: HashMap<&FuncType, u32> = HashMap::new();
        let canonical_of: Vec<u32> = (0u32..)
            .zip(&self.types)
            .map(|(i, ty)| match ty {
                Some(f) if typed => *canonical.entry(f).or_insert(i),
                _ => 0,
            })
            .collect();
        let mut candidates: HashMap<u32, Vec<u32>> = HashMap::new();
        for &f in &self.referenceable {
            let group = canonical_of[self.function_types[f as usize] as usize];
            candidates.entry(group).or_default().push(f);
        }

        while let Some(f) = walk.queue.pop_front() {
            let Some((root, _)) = walk.reached[f as usize] else {
                continue;
            };
            let Some(body) = (f as usize).checked_sub(imported).and_then(|i| self.bodies.get(i)) else {
                continue; // an import: a leaf
            };
            for &callee in &body.calls {
                walk.visit(callee, root, f);
            }
            for &ty in &body.indirect_types {
                for target in candidates.remove(&canonical_of[ty as usize]).unwrap_or_default() {
                    walk.visit(target, root, f);
                }
            }
        }
        let reached = walk.reached;

        let imports = self
            .import_names
            .iter()
            .enumerate()
            .map(|(index, import)| match reached[index] {
                None => ImportReach {
                    import: import.clone(),
                    reachable: false,
                    from: None,
                    path: Vec::new(),
                },
                Some((root, _)) => ImportReach {
                    import: import.clone(),
                    reachable: true,
                    from: Some(roots[root].describe()),
                    path: self.path_to(index as u32, &reached),
                },
            })
            .collect();
        Reachability {
            functions: count,
            reachable_functions: reached.iter().filter(|r| r.is_some()).count(),
            indirect_calls_typed: typed,
            imports,
        }
    }

    /// The parent chain from `f` back to its root, root first; at most one step per function,
    /// since parents are set once and always point at an earlier-reached function.
    fn path_to(&self, f: u32, reached: &[Option<(usize, u32)>]) -> Vec<String> {
        let mut chain = vec![f];
        let mut current = f;
        while let Some((_, parent)) = reached[current as usize] {
            if parent == NO_PARENT || chain.len() > reached.len() {
                break;
            }
            chain.push(parent);
            current = parent;
        }
        chain.reverse();
        if chain.len() > PATH_MAX {
            let tail = chain.split_off(chain.len() - PATH_MAX / 2);
            chain.truncate(PATH_MAX / 2);
            let mut names: Vec<String> = chain.into_iter().map(|i| self.name_of(i)).collect();
            names.push("…".to_string());
            names.extend(tail.into_iter().map(|i| self.name_of(i)));
            return names;
        }
        chain.into_iter().map(|i| self.name_of(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze_wat(text: &str) -> Reachability {
        analyze(&wat::parse_str(text).unwrap()).unwrap()
    }

    fn reachable(report: &Reachability) -> Vec<&str> {
        report
            .imports
            .iter()
            .filter(|i| i.reachable)
            .map(|i| i.import.as_str())
            .collect()
    }

    #[test]
    fn a_direct_call_chain_reaches_its_import_and_names_the_path() {
        let report = analyze_wat(
            r#"(module
                (import "env" "proxy_log" (func $log (param i32)))
                (import "env" "proxy_done" (func $done (result i32)))
                (func $outer (export "proxy_on_tick") (param i32) call $middle)
                (func $middle call $inner)
                (func $inner i32.const 1 call $log))"#,
        );
        assert_eq!(reachable(&report), vec!["env.proxy_log"]);
        let log = report.reach_of("env.proxy_log").unwrap();
        assert_eq!(log.from.as_deref(), Some("export proxy_on_tick"));
        assert_eq!(log.path, vec!["outer", "middle", "inner", "env.proxy_log"]);
        assert_eq!(report.is_reachable("env.proxy_done"), Some(false));
        assert_eq!(report.is_reachable("env.nothing"), None);
        assert_eq!((report.functions, report.reachable_functions), (5, 4));
    }

    #[test]
    fn a_function_nothing_calls_does_not_make_its_import_reachable() {
        let report = analyze_wat(
            r#"(module
                (import "env" "proxy_done" (func $done (result i32)))
                (func (export "proxy_on_log") (param i32))
                (func $dead (drop (call $done))))"#,
        );
        assert!(reachable(&report).is_empty());
        assert_eq!(report.reachable_functions, 1);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["imports"][0],
            serde_json::json!({"import":"env.proxy_done","reachable":false})
        );
    }

    #[test]
    fn an_exported_import_calling_function_is_a_root() {
        let report = analyze_wat(
            r#"(module
                (import "env" "proxy_done" (func $done (result i32)))
                (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (func $calls_done (result i32) call $done)
                (export "proxy_on_done" (func $calls_done))
                (start $init)
                (func $init i32.const 0 call $exit))"#,
        );
        assert_eq!(
            reachable(&report),
            vec!["env.proxy_done", "wasi_snapshot_preview1.proc_exit"]
        );
        assert_eq!(
            report.reach_of("env.proxy_done").unwrap().from.as_deref(),
            Some("export proxy_on_done")
        );
        let exit = report.reach_of("wasi_snapshot_preview1.proc_exit").unwrap();
        assert_eq!(exit.from.as_deref(), Some("the start function"));
        assert_eq!(exit.path, vec!["init", "wasi_snapshot_preview1.proc_exit"]);
    }

    #[test]
    fn an_exported_import_is_reachable_itself() {
        let report = analyze_wat(
            r#"(module
                (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
                (export "reexported" (func $log)))"#,
        );
        assert_eq!(reachable(&report), vec!["env.proxy_log"]);
        assert_eq!(report.imports[0].path, vec!["env.proxy_log"]);
    }

    #[test]
    fn an_indirect_call_reaches_table_entries_of_its_type_only() {
        let module = r#"(module
            (type $void (func))
            (type $unary (func (param i32)))
            (type $void_again (func))
            (import "env" "proxy_done" (func $done (result i32)))
            (import "env" "proxy_log" (func $log (param i32)))
            (import "env" "proxy_grpc_call" (func $grpc (result i32)))
            (table 3 funcref)
            (elem (i32.const 0) $via_table $other_type)
            (func $via_table (type $void) (drop (call $done)))
            (func $other_type (type $unary) (call $log (local.get 0)))
            (func $not_in_table (type $void) (drop (call $grpc)))
            (func (export "proxy_on_tick") (param i32)
                (call_indirect (type $void_again) (i32.const 0))))"#;
        let report = analyze_wat(module);
        assert!(report.indirect_calls_typed);
        // The call's type is a distinct index with the same signature: still a match.
        assert_eq!(reachable(&report), vec!["env.proxy_done"]);
        let done = report.reach_of("env.proxy_done").unwrap();
        assert_eq!(done.path, vec!["proxy_on_tick", "via_table", "env.proxy_done"]);
        // Without the call nothing in the table runs.
        let report = analyze_wat(&module.replace("(call_indirect (type $void_again) (i32.const 0))", "nop"));
        assert!(reachable(&report).is_empty());
    }

    #[test]
    fn ref_func_targets_and_call_ref_count_as_indirect() {
        let report = analyze_wat(
            r#"(module
                (type $void (func))
                (import "env" "proxy_done" (func $done (result i32)))
                (func $target (type $void) (drop (call $done)))
                (elem declare func $target)
                (func (export "proxy_on_tick") (param i32)
                    (call_ref $void (ref.func $target))))"#,
        );
        assert_eq!(reachable(&report), vec!["env.proxy_done"]);
    }

    #[test]
    fn subtyping_turns_off_narrowing() {
        let report = analyze_wat(
            r#"(module
                (type $base (sub (func)))
                (type $unary (func (param i32)))
                (import "env" "proxy_log" (func $log (param i32)))
                (table 1 funcref)
                (elem (i32.const 0) $other)
                (func $other (type $unary) (call $log (local.get 0)))
                (func (export "run") (call_indirect (type $base) (i32.const 0))))"#,
        );
        assert!(!report.indirect_calls_typed);
        assert_eq!(reachable(&report), vec!["env.proxy_log"]);
    }

    #[test]
    fn an_exported_table_makes_its_entries_roots() {
        let report = analyze_wat(
            r#"(module
                (import "env" "proxy_log" (func $log (param i32)))
                (table (export "table") 1 funcref)
                (elem (i32.const 0) $entry)
                (func $entry (call $log (i32.const 0))))"#,
        );
        let log = report.reach_of("env.proxy_log").unwrap();
        assert!(log
            .from
            .as_deref()
            .unwrap()
            .starts_with("a function reference the host can reach"));
    }

    #[test]
    fn a_deep_call_chain_is_walked_without_recursion_and_its_path_shortened() {
        let depth = 20_000;
        let mut text = String::from(r#"(module (import "env" "proxy_log" (func $log (param i32)))"#);
        text.push_str(r#"(func (export "run") call $f0)"#);
        for i in 0..depth {
            text.push_str(&format!("(func $f{i} call $f{})", i + 1));
        }
        text.push_str(&format!("(func $f{depth} (call $log (i32.const 0))))"));
        let report = analyze_wat(&text);
        let log = report.reach_of("env.proxy_log").unwrap();
        assert_eq!(log.path.len(), PATH_MAX + 1);
        assert_eq!(log.path[PATH_MAX / 2], "…");
        assert_eq!(log.path.last().unwrap(), "env.proxy_log");
        assert_eq!(report.reachable_functions, depth + 3);
    }

    #[test]
    fn names_from_the_name_section_are_escaped_and_bounded() {
        assert_eq!(display_name("a\nb"), "a\\nb");
        let long = "x".repeat(NAME_MAX + 5);
        assert_eq!(display_name(&long).chars().count(), NAME_MAX + 1);
    }

    #[test]
    fn malformed_modules_are_errors_not_panics() {
        let valid = wat::parse_str(
            r#"(module (import "env" "proxy_log" (func $log (param i32)))
                (func (export "run") (call $log (i32.const 0))))"#,
        )
        .unwrap();
        // Every truncation of a valid module is an error or (for a cut after a whole section)
        // a smaller module; none panics.
        for len in 0..valid.len() {
            let _ = analyze(&valid[..len]);
        }
        // Nor does any single corrupted byte.
        for at in 8..valid.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff, valid[at].wrapping_add(1)] {
                let mut bytes = valid.clone();
                bytes[at] = value;
                let _ = analyze(&bytes);
            }
        }
        assert!(matches!(analyze(b"(module)"), Err(ReachabilityError::Malformed { .. })));
        assert!(matches!(
            analyze(&valid[..valid.len() - 3]),
            Err(ReachabilityError::Malformed { .. })
        ));
        // Parses, but calls a function that does not exist / has no body for a declared function.
        let bad_call = wat::parse_str(r#"(module (func (export "run") call 0) (func))"#).unwrap();
        let mut bytes = bad_call.clone();
        let at = bytes.windows(2).rposition(|w| w == [0x10, 0x00]).unwrap();
        bytes[at + 1] = 0x07;
        assert_eq!(
            analyze(&bytes).unwrap_err().to_string(),
            "invalid module: function 0 refers to function 7, but the module has 2"
        );
        let no_code = wat::parse_str("(module (func))").unwrap();
        let cut = no_code.len() - no_code.iter().rev().position(|&b| b == 10).unwrap() - 1;
        let error = analyze(&no_code[..cut]).unwrap_err().to_string();
        assert!(error.contains("code section is absent"), "{error}");
    }

    #[test]
    fn indices_past_what_the_module_declares_are_errors() {
        let mut export = wat::parse_str(r#"(module (func (export "run")))"#).unwrap();
        let at = export.windows(5).position(|w| w == b"run\0\0").unwrap();
        export[at + 4] = 5;
        assert_eq!(
            analyze(&export).unwrap_err().to_string(),
            "invalid module: export run refers to function 5, but the module has 1"
        );
        let mut indirect = wat::parse_str(
            r#"(module (type (func)) (table 1 funcref)
                (func (export "run") (call_indirect (type 0) (i32.const 0))))"#,
        )
        .unwrap();
        let at = indirect.windows(5).position(|w| w == [0x41, 0, 0x11, 0, 0]).unwrap();
        indirect[at + 3] = 9;
        assert_eq!(
            analyze(&indirect).unwrap_err().to_string(),
            "invalid module: function 0 refers to type 9, which is not a function type of the module"
        );
    }

    #[test]
    fn a_component_is_not_a_module() {
        let component = wat::parse_str("(component)").unwrap();
        assert!(analyze(&component)
            .unwrap_err()
            .to_string()
            .contains("a component, not a core module"));
    }
}
