//! Host side of the `wharf:platform` WIT package (`sdk/wit/`): what wharf offers apps
//! beyond `wasi:http`.

use super::state::HostState;
use wasmtime::component::{HasSelf, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "wharf:platform/imports",
    });
}

use bindings::wharf::platform::config;

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    Ok(())
}

impl config::Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.variables()
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.variables().to_vec()
    }
}
