//! What a `.wasm` file is, read from its bytes without compiling it: a core
//! module or a component, which interfaces it imports and exports, and which
//! version of the stsguard contract it was built against.
//!
//! Why before compiling: compiling an interpreted guest (Python, JavaScript)
//! takes tens of seconds and hundreds of MB, only for wasmtime's linker to fail
//! with a message about one missing resource. Reading the sections takes
//! microseconds and can say what the file *is* — a Kubewarden waPC module, a
//! wasip1 program, a component of another world or contract version — and what
//! stsguard expects instead. `Engine::load` and `stsguard inspect` both ask here.

use stsguard_contract::{WIT_PACKAGE, WIT_PACKAGES_SERVED};
use wasmparser::{ComponentExternalKind, ComponentTypeRef, Encoding, Parser, Payload};

/// The WIT package name policies import and export, without its version.
const PACKAGE_NAME: &str = "stsguard:policy";

/// The functions of the `policy` world every policy exports.
pub const POLICY_EXPORTS: [&str; 3] = ["metadata", "validate-settings", "evaluate"];

/// What a `.wasm` file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anatomy {
    /// A core WebAssembly module (the pre-component format).
    CoreModule {
        flavor: CoreFlavor,
        imports: Vec<String>,
        exports: Vec<String>,
    },
    /// A WebAssembly component: its top-level imports and exports.
    Component {
        imports: Vec<String>,
        exports: Vec<String>,
    },
}

/// Which kind of core module, judged by its imports and exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreFlavor {
    /// A waPC guest: what Kubewarden policies are.
    Wapc,
    /// A WASI preview 1 program (`wasm32-wasip1`, `wasm32-wasi`).
    Wasip1,
    Plain,
}

impl CoreFlavor {
    fn describe(self) -> &'static str {
        match self {
            Self::Wapc => "a waPC module (the format of Kubewarden policies)",
            Self::Wasip1 => "a core WebAssembly module for WASI preview 1 (wasm32-wasip1)",
            Self::Plain => "a core WebAssembly module",
        }
    }
}

impl Anatomy {
    /// Reads the file's sections. An error says why it is not WebAssembly.
    pub fn read(bytes: &[u8]) -> Result<Self, String> {
        if !bytes.starts_with(b"\0asm") {
            let start: String = bytes
                .iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(format!(
                "it is not WebAssembly: a .wasm file starts with the bytes 00 61 73 6d \
                 (\"\\0asm\"), this one with {start}"
            ));
        }
        let mut encoding = None;
        let mut imports = Vec::new();
        let mut exports = Vec::new();
        // Nested modules and components come through the same iterator; only
        // the outermost level (depth 1) is the file's own interface.
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| format!("it is not valid WebAssembly: {e}"))?;
            match payload {
                Payload::Version { encoding: e, .. } => {
                    depth += 1;
                    encoding.get_or_insert(e);
                }
                Payload::End(_) => depth = depth.saturating_sub(1),
                _ if depth != 1 => {}
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import.map_err(|e| e.to_string())?;
                        imports.push(format!("{}::{}", import.module, import.name));
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        exports.push(export.map_err(|e| e.to_string())?.name.to_string());
                    }
                }
                // Types a world `use`s are imported and exported by name too
                // (`verdict`, `level`): not part of what it does, so left out.
                Payload::ComponentImportSection(reader) => {
                    for import in reader {
                        let import = import.map_err(|e| e.to_string())?;
                        if !matches!(import.ty, ComponentTypeRef::Type(_)) {
                            imports.push(import.name.name.to_string());
                        }
                    }
                }
                Payload::ComponentExportSection(reader) => {
                    for export in reader {
                        let export = export.map_err(|e| e.to_string())?;
                        if export.kind != ComponentExternalKind::Type {
                            exports.push(export.name.name.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(match encoding {
            Some(Encoding::Component) => Self::Component { imports, exports },
            _ => {
                let wapc = imports.iter().any(|name| name.starts_with("wapc::"))
                    || exports.iter().any(|name| name == "__guest_call");
                let wasip1 = imports
                    .iter()
                    .any(|name| name.starts_with("wasi_snapshot_preview1::"));
                let flavor = match (wapc, wasip1) {
                    (true, _) => CoreFlavor::Wapc,
                    (false, true) => CoreFlavor::Wasip1,
                    (false, false) => CoreFlavor::Plain,
                };
                Self::CoreModule {
                    flavor,
                    imports,
                    exports,
                }
            }
        })
    }

    pub fn imports(&self) -> &[String] {
        match self {
            Self::CoreModule { imports, .. } | Self::Component { imports, .. } => imports,
        }
    }

    pub fn exports(&self) -> &[String] {
        match self {
            Self::CoreModule { exports, .. } | Self::Component { exports, .. } => exports,
        }
    }

    /// What the file is, in a few words.
    pub fn describe(&self) -> String {
        match self {
            Self::CoreModule { flavor, .. } => flavor.describe().to_string(),
            Self::Component { .. } => match self.contract_version() {
                Some(version) => format!("a stsguard policy component ({PACKAGE_NAME}@{version})"),
                None if self.exports_policy_world() => {
                    "a component exporting the policy functions".to_string()
                }
                None => "a WebAssembly component of another world".to_string(),
            },
        }
    }

    /// The version of the stsguard contract the component was built against,
    /// from the `stsguard:policy/...@VERSION` interfaces it imports.
    pub fn contract_version(&self) -> Option<&str> {
        self.imports().iter().find_map(|name| {
            let (package, version) = name.split_once('@')?;
            package
                .strip_prefix(PACKAGE_NAME)
                .filter(|rest| rest.starts_with('/'))
                .map(|_| version)
        })
    }

    fn exports_policy_world(&self) -> bool {
        POLICY_EXPORTS
            .iter()
            .all(|function| self.exports().iter().any(|export| export == function))
    }

    /// Checks that this is a policy component this stsguard can serve; the error
    /// names what it is and what is expected.
    pub fn expect_policy(&self) -> Result<(), String> {
        let expected = format!("stsguard serves components of the {WIT_PACKAGE} `policy` world");
        let build = "build it with `stsguard build` (or `cargo build --target wasm32-wasip2`, \
                     `componentize-py`, `jco componentize`) against the WIT that `stsguard new` \
                     writes";
        match self {
            Self::CoreModule { flavor, .. } => Err(format!(
                "it is {}, not a component: {expected}; {build}",
                flavor.describe()
            )),
            Self::Component { .. } => {
                if let Some(version) = self.contract_version()
                    && !served(version)
                {
                    return Err(format!(
                        "it was built against {PACKAGE_NAME}@{version}, and this stsguard serves \
                         {WIT_PACKAGE} (versions {}): rebuild it against the WIT of this version \
                         (`stsguard new` writes it; the changes are listed at the top of \
                         policies/wit/policy.wit)",
                        compatible_range()
                    ));
                }
                // The host links WASI 0.2 without wasi:http: policies get no network.
                // componentize-js imports it unless told not to.
                if let Some(http) = self.imports().iter().find(|i| i.starts_with("wasi:http/")) {
                    return Err(format!(
                        "it imports {http}, which stsguard does not provide (a policy has no \
                         network); a JavaScript policy must be built without it: jco \
                         componentize ... --disable http --disable fetch-event (the template's \
                         `npm run build` does)"
                    ));
                }
                if !self.exports_policy_world() {
                    let missing: Vec<&str> = POLICY_EXPORTS
                        .into_iter()
                        .filter(|function| !self.exports().iter().any(|e| e == function))
                        .collect();
                    return Err(format!(
                        "it is a component of another world: it does not export {} (it exports: \
                         {}); {expected}; {build}",
                        missing.join(", "),
                        list_or_none(self.exports()),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The version in [`WIT_PACKAGE`], e.g. `0.2.0`.
pub fn contract_version() -> &'static str {
    WIT_PACKAGE
        .rsplit_once('@')
        .map_or(WIT_PACKAGE, |(_, version)| version)
}

/// Semantic versioning with `0.x` counting as the major part, as the WIT says.
fn same_major(a: &str, b: &str) -> bool {
    major(a) == major(b)
}

fn major(version: &str) -> (&str, &str) {
    let mut parts = version.split('.');
    let first = parts.next().unwrap_or("");
    let second = parts.next().unwrap_or("");
    if first == "0" {
        (first, second)
    } else {
        (first, "")
    }
}

/// Whether a component of contract `version` can be served: one of the served
/// versions' majors.
fn served(version: &str) -> bool {
    WIT_PACKAGES_SERVED
        .iter()
        .filter_map(|package| package.rsplit_once('@'))
        .any(|(_, served)| same_major(version, served))
}

/// The served versions, as a user reads them: `0.2.x, 0.3.x`.
fn compatible_range() -> String {
    WIT_PACKAGES_SERVED
        .iter()
        .filter_map(|package| package.rsplit_once('@'))
        .map(|(_, version)| match major(version) {
            ("0", minor) => format!("0.{minor}.x"),
            (major, _) => format!("{major}.x"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(imports: &[&str], exports: &[&str]) -> Anatomy {
        Anatomy::Component {
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: exports.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_built_in_is_a_policy_of_this_contract() {
        let anatomy = Anatomy::read(crate::builtin::module("probes").unwrap()).unwrap();
        assert!(matches!(anatomy, Anatomy::Component { .. }), "{anatomy:?}");
        assert_eq!(anatomy.contract_version(), Some(contract_version()));
        anatomy.expect_policy().unwrap();
        assert!(
            anatomy.describe().contains("stsguard:policy@0.3"),
            "{}",
            anatomy.describe()
        );
    }

    #[test]
    fn text_is_not_webassembly() {
        let error = Anatomy::read(b"apiVersion: v1\n").unwrap_err();
        assert!(error.contains("this one with 61 70 69 56"), "{error}");
    }

    #[test]
    fn truncated_webassembly_is_refused() {
        let mut bytes = crate::builtin::module("probes").unwrap().to_vec();
        bytes.truncate(bytes.len() / 2);
        let error = Anatomy::read(&bytes).unwrap_err();
        assert!(error.starts_with("it is not valid WebAssembly"), "{error}");
    }

    #[test]
    fn core_modules_are_named_by_what_they_import() {
        // (module (import "wasi_snapshot_preview1" "fd_write" (func)))
        let wasip1 = [
            0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, // header, version 1: a core module
            1, 4, 1, 0x60, 0, 0, // type section: one func type () -> ()
            2, 0x23, 1, 22, // import section (35 bytes), one import, module name of 22 bytes
        ]
        .into_iter()
        .chain(*b"wasi_snapshot_preview1")
        .chain([8])
        .chain(*b"fd_write")
        .chain([0, 0]) // a function of type 0
        .collect::<Vec<u8>>();
        let anatomy = Anatomy::read(&wasip1).unwrap();
        assert_eq!(
            anatomy,
            Anatomy::CoreModule {
                flavor: CoreFlavor::Wasip1,
                imports: vec!["wasi_snapshot_preview1::fd_write".into()],
                exports: vec![],
            }
        );
        let error = anatomy.expect_policy().unwrap_err();
        assert!(
            error.starts_with("it is a core WebAssembly module for WASI preview 1"),
            "{error}"
        );
        assert!(error.contains("stsguard:policy@0.3.0"), "{error}");

        let wapc = Anatomy::CoreModule {
            flavor: CoreFlavor::Wapc,
            imports: vec!["wapc::__host_call".into()],
            exports: vec!["__guest_call".into()],
        };
        assert!(wapc.expect_policy().unwrap_err().contains("Kubewarden"));
    }

    #[test]
    fn another_contract_version_is_named_with_ours() {
        let old = component(
            &["stsguard:policy/types@0.1.0", "stsguard:policy/host@0.1.0"],
            &POLICY_EXPORTS,
        );
        let error = old.expect_policy().unwrap_err();
        assert!(
            error.contains("built against stsguard:policy@0.1.0"),
            "{error}"
        );
        assert!(
            error.contains("serves stsguard:policy@0.3.0 (versions 0.2.x, 0.3.x)"),
            "{error}"
        );
        // A newer patch release of a served line is served, the earlier line too.
        for version in ["0.2.7", "0.3.1"] {
            component(
                &[&format!("stsguard:policy/host@{version}")],
                &POLICY_EXPORTS,
            )
            .expect_policy()
            .unwrap();
        }
    }

    #[test]
    fn a_component_that_wants_the_network_is_told_how_to_build_without_it() {
        let fetcher = component(
            &["stsguard:policy/host@0.2.0", "wasi:http/types@0.2.10"],
            &POLICY_EXPORTS,
        );
        let error = fetcher.expect_policy().unwrap_err();
        assert!(
            error.starts_with("it imports wasi:http/types@0.2.10, which stsguard does not provide"),
            "{error}"
        );
        assert!(
            error.contains("--disable http --disable fetch-event"),
            "{error}"
        );
    }

    #[test]
    fn a_component_of_another_world_lists_what_it_exports() {
        let command = component(&["wasi:cli/environment@0.2.3"], &["wasi:cli/run@0.2.3"]);
        let error = command.expect_policy().unwrap_err();
        assert!(
            error.contains("does not export metadata, validate-settings, evaluate"),
            "{error}"
        );
        assert!(
            error.contains("(it exports: wasi:cli/run@0.2.3)"),
            "{error}"
        );
        assert_eq!(
            command.describe(),
            "a WebAssembly component of another world"
        );
    }
}
