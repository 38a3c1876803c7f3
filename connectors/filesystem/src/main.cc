// tributary-connector-filesystem: lists a directory tree (README.md).
#include "tributary/sdk/connector.h"

#include "filesystem_connector.h"

int main() {
  tributary::connectors::filesystem::FilesystemConnector connector;
  tributary::sdk::ServeOptions options;
  options.log_name = "filesystem";
  return tributary::sdk::serve(connector, options);
}
