//! Print the CRDs of microsandbox.dev as a multi-document YAML stream.

fn main() {
    print!("{}", microsandbox_crds::crds_yaml());
}
