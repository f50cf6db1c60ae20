//! The prompts: upstream microsandbox's `create_python_sandbox` and `create_node_sandbox`, which
//! tell the model how to use the tools for a sandbox of that language.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{PromptMessage, Role};
use rmcp::{prompt, prompt_router};

use crate::args::SandboxPromptArgs;
use crate::tools::SandboxTools;

/// The instructions for a sandbox `name` of `image`, whose code runs as `language`.
fn instructions(name: &str, image: &str, language: &str) -> Vec<PromptMessage> {
    vec![PromptMessage::new_text(
        Role::User,
        format!(
            "Start a sandbox named {name:?} with the sandbox_start tool (image {image:?}). Run \
             {language} code in it with sandbox_run_code (language {language:?}): variables and \
             imports of one call stay for the next. Run programs with sandbox_run_command, move \
             files with sandbox_write_file / sandbox_read_file, check its use with \
             sandbox_get_metrics, and call sandbox_remove with {name:?} when done."
        ),
    )]
}

#[prompt_router(vis = "pub(crate)")]
impl SandboxTools {
    #[prompt(
        name = "create_python_sandbox",
        description = "Set up a Python sandbox: which tools start it, run code in it and remove it."
    )]
    async fn create_python_sandbox(
        &self,
        Parameters(a): Parameters<SandboxPromptArgs>,
    ) -> Vec<PromptMessage> {
        instructions(&a.sandbox_name, "python", "python")
    }

    #[prompt(
        name = "create_node_sandbox",
        description = "Set up a Node.js sandbox: which tools start it, run code in it and remove it."
    )]
    async fn create_node_sandbox(
        &self,
        Parameters(a): Parameters<SandboxPromptArgs>,
    ) -> Vec<PromptMessage> {
        instructions(&a.sandbox_name, "node", "javascript")
    }
}
