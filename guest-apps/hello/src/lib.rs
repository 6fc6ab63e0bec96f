use wharf_sdk::{Request, Response};

fn hello(_req: Request) -> Response {
    Response::text("Hello from wharf!\n")
}

wharf_sdk::export!(hello);
