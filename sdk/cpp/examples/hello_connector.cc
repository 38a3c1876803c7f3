// hello_connector: the smallest useful connector. Each sync sends three pages of greetings.
//
//   tributary run --command ./hello_connector_cpp ...   (or any go-plugin host)
#include "tributary/sdk/connector.h"

#include <string>
#include <vector>

namespace {

class HelloConnector final : public tributary::sdk::Connector {
 public:
  absl::StatusOr<std::string> sync(const std::string& options,
                                   tributary::sdk::Callback& callback) override {
    // Never log `options`: it may carry credentials.
    tributary::sdk::log(tributary::sdk::LogLevel::Info, "saying hello",
                        {{"options_bytes", std::to_string(options.size())}});
    const std::vector<std::string> names = {"world", "tributary", "go-plugin"};
    int objects = 0;
    for (size_t page = 0; page < 3; ++page) {
      if (callback.cancelled()) {
        return absl::CancelledError("the host cancelled the sync");
      }
      std::vector<proto::DataObject> greetings;
      for (size_t i = 0; i < names.size(); ++i) {
        proto::DataObject object;
        object.set_remote_id("hello-" + std::to_string(page) + "-" + std::to_string(i));
        object.set_resource_name("Hello, " + names[i] + "!");
        object.set_uri("hello://" + names[i] + "/" + std::to_string(page));
        object.set_metadata(R"({"language":"en"})");
        greetings.push_back(std::move(object));
      }
      // Every page's result is the host's acknowledgement: stop at the first failure.
      if (absl::Status status = callback.upsert(greetings); !status.ok()) {
        return status;
      }
      objects += static_cast<int>(greetings.size());
    }
    return R"({"pages":3,"objects":)" + std::to_string(objects) + "}";
  }
};

}  // namespace

int main() {
  HelloConnector connector;
  return tributary::sdk::serve(connector);
}
