// VCS over ssh:// against a real, private sshd on loopback: client keys of every format libssh2
// reads, host keys checked against the secret's known_hosts (plain, hashed, `[host]:port`),
// updates, and every refusal with a clear message that never quotes the private key.

#include "tributary/common/strings.h"
#include "tributary/installer/installer.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <iostream>

namespace tributary::installer {
namespace {

namespace fs = std::filesystem;
using testing::GitRepo;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::SshKey;
using testing::SshServer;
using testing::TempDir;

std::string script(const std::string& version) { return "#!/bin/sh\necho " + version + "\n"; }

// The base64 body of a private key: what must never appear in a message.
std::string keyBody(const std::string& private_key) {
  const auto begin = private_key.find('\n') + 1;
  return private_key.substr(begin, 40);
}

class SshTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repos_ = tmp_.path() / "repos";
    fs::create_directories(repos_);
    repo_ = std::make_unique<GitRepo>(repos_, "conn");
    c1_ = repo_->commit({{"run.sh", script("v1")}}, "first");
    keys_ = tmp_.path() / "keys";
    ed25519_ = testing::makeSshKey(keys_, "id_ed25519", "ed25519");
    other_ = testing::makeSshKey(keys_, "id_other", "ed25519");  // not authorized
    server_ = std::make_unique<SshServer>(tmp_.path() / "sshd", ed25519_.public_key);
    ASSERT_TRUE(server_->ok()) << "sshd did not start:\n" << server_->log();
  }

  [[nodiscard]] std::string knownHosts() const {
    return strings::cat("[127.0.0.1]:", server_->port(), " ", server_->hostKey(), "\n");
  }

  Credentials creds(const SshKey& key, const std::string& known_hosts) const {
    Credentials c;
    c.ssh_private_key = key.private_key;
    c.known_hosts = known_hosts;
    return c;
  }

  // A fresh installer and cache for each secret (install() reuses an installed version).
  std::unique_ptr<Installer> make(std::map<std::string, Credentials, std::less<>> secrets) {
    Options options =
        testing::testOptions(tmp_.path() / ("cache" + std::to_string(caches_++)), sink_);
    options.secrets = std::make_shared<StaticSecretResolver>(std::move(secrets));
    auto installer = Installer::create(std::move(options));
    EXPECT_TRUE(installer.ok()) << installer.status();
    return installer.ok() ? *std::move(installer) : nullptr;
  }

  ConnectorSpec spec(const std::string& secret_ref) const {
    ConnectorSpec s;
    s.name = "ssh-conn";
    s.source = Source::Vcs;
    s.uri = server_->url(repo_->bare());
    s.secret_ref = secret_ref;
    s.install_command = "cp run.sh built.sh && chmod +x built.sh";
    s.command = "./built.sh";
    return s;
  }

  absl::StatusOr<Installation> installWith(const Credentials& c) {
    return make({{"s", c}})->install(spec("s"));
  }

  void expectNoLeftovers() {
    for (int i = 0; i < caches_; ++i) {
      const fs::path cache = tmp_.path() / ("cache" + std::to_string(i));
      EXPECT_THAT(testing::listTree(cache / "staging"), IsEmpty());
      EXPECT_THAT(testing::listTree(cache / "trash"), IsEmpty());
    }
  }

  void expectRefused(const absl::StatusOr<Installation>& inst, absl::StatusCode code,
                     const std::vector<std::string>& parts, const SshKey& key) {
    ASSERT_FALSE(inst.ok());
    EXPECT_EQ(inst.status().code(), code) << inst.status();
    const std::string message(inst.status().message());
    std::cout << "[ refused  ] " << message << "\n";
    for (const auto& p : parts) {
      EXPECT_THAT(message, HasSubstr(p));
    }
    EXPECT_THAT(message, Not(HasSubstr(keyBody(key.private_key))));
    EXPECT_THAT(message, Not(HasSubstr("PRIVATE KEY")));
    EXPECT_THAT(sink_->all(), Not(HasSubstr(keyBody(key.private_key))));
  }

  TempDir tmp_;
  fs::path repos_;
  fs::path keys_;
  std::unique_ptr<GitRepo> repo_;
  std::string c1_;
  SshKey ed25519_;
  SshKey other_;
  std::unique_ptr<SshServer> server_;
  int caches_ = 0;
  std::shared_ptr<testing::CapturingSink> sink_ = std::make_shared<testing::CapturingSink>();
};

TEST_F(SshTest, CloneAndUpdate) {
  auto installer = make({{"s", creds(ed25519_, knownHosts())}});
  ConnectorSpec s = spec("s");
  auto v1 = installer->install(s);
  ASSERT_TRUE(v1.ok()) << v1.status() << "\n" << server_->log();
  EXPECT_EQ(v1->resolved_commit, c1_);
  EXPECT_EQ(v1->resolved_ref, "refs/heads/main");
  EXPECT_EQ(testing::shOk("./built.sh", v1->root), "v1\n");
  // origin is the ssh URL; the key is in no file of the checkout.
  EXPECT_THAT(testing::readFile(v1->root / ".git/config"), HasSubstr(s.uri));
  EXPECT_THAT(testing::sh("grep -rl " + testing::quote(keyBody(ed25519_.private_key)) + " " +
                          testing::quote(tmp_.path() / "cache0"))
                  .output,
              IsEmpty());

  const std::string c2 = repo_->commit({{"run.sh", script("v2")}}, "second");
  auto v2 = installer->update(s);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_TRUE(v2->installed_now);
  EXPECT_EQ(v2->resolved_commit, c2);
  EXPECT_EQ(testing::shOk("./built.sh", v2->root), "v2\n");
  auto again = installer->update(s);  // ls-remote over ssh: nothing new
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->installed_now);

  repo_->tag("v1.0", /*annotated=*/true);
  ConnectorSpec tagged = s;
  tagged.ref = "v1.0";
  auto t = installer->install(tagged);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->resolved_commit, c2);
  EXPECT_THAT(sink_->all(), Not(HasSubstr(keyBody(ed25519_.private_key))));
  expectNoLeftovers();
}

TEST_F(SshTest, KnownHostsForms) {
  const std::string port = std::to_string(server_->port());
  const std::string key = server_->hostKey();
  // Hashed, the way `ssh-keyscan -H` / `ssh-keygen -H` write it.
  const fs::path file = tmp_.path() / "known_hosts";
  testing::writeFile(file, "[127.0.0.1]:" + port + " " + key + "\n");
  testing::shOk("ssh-keygen -q -H -f " + testing::quote(file.string()));
  const std::string hashed = testing::readFile(file);
  ASSERT_THAT(hashed, HasSubstr("|1|"));
  ASSERT_THAT(hashed, Not(HasSubstr("127.0.0.1")));

  for (const std::string& kh : {knownHosts(), hashed,
                                // comma list, other hosts' lines around it, a comment, a wildcard
                                "# ours\ngit.example.com " + other_.public_key + "[localhost]:" +
                                    port + ",[127.0.0.1]:" + port + " " + key + " sshd\n",
                                "[127.0.0.*]:" + port + " " + key + "\n"}) {
    auto inst = installWith(creds(ed25519_, kh));
    ASSERT_TRUE(inst.ok()) << kh << "\n" << inst.status();
    EXPECT_EQ(inst->resolved_commit, c1_);
  }
  expectNoLeftovers();
}

TEST_F(SshTest, ClientKeyFormats) {
  // What libssh2 1.10 (Debian 12) reads from memory. RSA keys need a server that accepts
  // ssh-rsa (SHA-1) signatures: libssh2 1.10 makes no others, OpenSSH >= 8.8 refuses them.
  struct Case {
    std::string type;
    std::string format;
    std::string passphrase;
  };
  const std::vector<Case> cases = {
      {"ed25519", "", ""},  {"ed25519", "", "pass-phrase"},  {"ecdsa", "", ""},
      {"ecdsa", "PEM", ""}, {"ecdsa", "PEM", "pass-phrase"}, {"rsa", "PEM", ""},
      {"rsa", "", ""},      {"rsa", "PEM", "pass-phrase"}};
  std::vector<SshKey> keys;
  std::string authorized;
  for (const auto& c : cases) {
    keys.push_back(testing::makeSshKey(keys_, c.type + c.format + c.passphrase, c.type, c.format,
                                       c.passphrase));
    authorized += keys.back().public_key;
  }
  SshServer rsa_server(tmp_.path() / "sshd-rsa", authorized, "ed25519",
                       "PubkeyAcceptedAlgorithms +ssh-rsa");
  ASSERT_TRUE(rsa_server.ok()) << rsa_server.log();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    Credentials c;
    c.ssh_private_key = keys[i].private_key;
    c.ssh_passphrase = cases[i].passphrase;
    c.known_hosts = strings::cat("[127.0.0.1]:", rsa_server.port(), " ", rsa_server.hostKey());
    ConnectorSpec s = spec("s");
    s.uri = rsa_server.url(repo_->bare());
    auto inst = make({{"s", c}})->install(s);
    ASSERT_TRUE(inst.ok()) << cases[i].type << " " << cases[i].format << " " << cases[i].passphrase
                           << ": " << inst.status() << "\n"
                           << rsa_server.log();
    EXPECT_EQ(inst->resolved_commit, c1_);
  }

  // The default sshd refuses libssh2's RSA signatures: a clear hint.
  SshKey rsa = testing::makeSshKey(keys_, "id_rsa_default", "rsa", "PEM");
  SshServer modern(tmp_.path() / "sshd-modern", rsa.public_key);
  ASSERT_TRUE(modern.ok()) << modern.log();
  Credentials c;
  c.ssh_private_key = rsa.private_key;
  c.known_hosts = strings::cat("[127.0.0.1]:", modern.port(), " ", modern.hostKey());
  ConnectorSpec s = spec("s");
  s.uri = modern.url(repo_->bare());
  auto refused = make({{"s", c}})->install(s);
  expectRefused(refused, absl::StatusCode::kPermissionDenied,
                {"authentication failed", "ed25519 or ECDSA"}, rsa);
  expectNoLeftovers();
}

TEST_F(SshTest, EcdsaHostKey) {
  SshServer ecdsa(tmp_.path() / "sshd-ecdsa", ed25519_.public_key, "ecdsa");
  ASSERT_TRUE(ecdsa.ok()) << ecdsa.log();
  ASSERT_THAT(ecdsa.hostKey(), HasSubstr("ecdsa-sha2-nistp256"));
  Credentials c = creds(ed25519_, strings::cat("[127.0.0.1]:", ecdsa.port(), " ", ecdsa.hostKey()));
  ConnectorSpec s = spec("s");
  s.uri = ecdsa.url(repo_->bare());
  auto inst = make({{"s", c}})->install(s);
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(inst->resolved_commit, c1_);
}

TEST_F(SshTest, WrongClientKey) {
  auto inst = installWith(creds(other_, knownHosts()));
  expectRefused(inst, absl::StatusCode::kPermissionDenied, {"authentication failed"}, other_);
  expectNoLeftovers();
}

TEST_F(SshTest, MissingKnownHostsFailsBeforeConnecting) {
  const std::string log_before = server_->log();
  auto inst = installWith(creds(ed25519_, ""));
  expectRefused(inst, absl::StatusCode::kFailedPrecondition,
                {"known_hosts", "secret 's'", "[127.0.0.1]:" + std::to_string(server_->port()),
                 "ssh-keyscan -p " + std::to_string(server_->port())},
                ed25519_);
  // No secret at all.
  ConnectorSpec anonymous = spec("");
  auto none = make({})->install(anonymous);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("known_hosts"));
  // Parallel tests probing for free ports may connect and close before the SSH banner; an SSH
  // client that got as far as the key exchange leaves a "[preauth]" or "Accepted" line.
  const std::string log_after = server_->log().substr(log_before.size());
  EXPECT_THAT(log_after, Not(HasSubstr("[preauth]"))) << "no SSH session may be started";
  EXPECT_THAT(log_after, Not(HasSubstr("Accepted"))) << "no SSH session may be started";
  expectNoLeftovers();
}

TEST_F(SshTest, WrongHostKeyIsAMismatchNamingTheOfferedFingerprint) {
  const std::string port = std::to_string(server_->port());
  // The entry for this host holds another key: someone in the middle, or a changed key.
  const std::string kh = "[127.0.0.1]:" + port + " " + other_.public_key;
  auto inst = installWith(creds(ed25519_, kh));
  expectRefused(inst, absl::StatusCode::kPermissionDenied,
                {"host key verification failed", "[127.0.0.1]:" + port,
                 "ssh-ed25519 key " + server_->hostFingerprint(), "does not match"},
                ed25519_);
  // known_hosts without this host (only the default port, another host).
  auto unknown = installWith(
      creds(ed25519_, "127.0.0.1 " + server_->hostKey() + "\nexample.com " + server_->hostKey()));
  expectRefused(
      unknown, absl::StatusCode::kFailedPrecondition,
      {"[127.0.0.1]:" + port, "is not in the secret's known_hosts", server_->hostFingerprint()},
      ed25519_);
  expectNoLeftovers();
}

TEST_F(SshTest, InsecureOptOutIsLogged) {
  Credentials c = creds(ed25519_, "");
  c.insecure_skip_host_key_verification = true;
  auto inst = installWith(c);
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_THAT(sink_->all(), HasSubstr("SSH host key verification is disabled"));
}

TEST_F(SshTest, DirectorySecret) {
  const fs::path secrets = tmp_.path() / "secrets";
  testing::writeFile(secrets / "git" / "ssh-privatekey", ed25519_.private_key);
  testing::writeFile(secrets / "git" / "known_hosts", knownHosts());
  Options options = testing::testOptions(tmp_.path() / "cache-dir", sink_);
  options.secrets = std::make_shared<DirectorySecretResolver>(secrets);
  auto installer = Installer::create(std::move(options));
  ASSERT_TRUE(installer.ok());
  auto inst = (*installer)->install(spec("git"));
  ASSERT_TRUE(inst.ok()) << inst.status();
  EXPECT_EQ(inst->resolved_commit, c1_);

  testing::writeFile(secrets / "bad" / "ssh-privatekey", ed25519_.private_key);
  testing::writeFile(secrets / "bad" / "insecure-skip-host-key-verification", "yes\n");
  auto bad = (*installer)->install(spec("bad"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tributary::installer
