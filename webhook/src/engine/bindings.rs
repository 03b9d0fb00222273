//! Host bindings generated from the policy contract, `policies/wit`.

wasmtime::component::bindgen!({
    world: "policy",
    path: "../policies/wit",
});
