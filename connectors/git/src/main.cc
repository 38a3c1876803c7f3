// tributary-connector-git: lists the files of a git repository at a ref (README.md).
#include "tributary/sdk/connector.h"

#include "git_connector.h"

int main() {
  tributary::connectors::git::GitConnector connector;
  tributary::sdk::ServeOptions options;
  options.log_name = "git";
  return tributary::sdk::serve(connector, options);
}
