// known_hosts parsing and matching, against keys, fingerprints and hashed entries made by
// OpenSSH's own ssh-keygen.

#include "known_hosts.h"

#include "tributary/common/strings.h"

#include "test_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tributary::installer::internal {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::TempDir;

struct HostKeyFile {
  std::string line;         // "ssh-ed25519 AAAA…"
  std::string blob;         // decoded
  std::string fingerprint;  // "SHA256:…" from ssh-keygen -l
};

std::string decode(const std::string& b64) {
  // ssh-keygen -e -m RFC4716 would do; simpler: base64 -d.
  return testing::sh("printf %s " + testing::quote(b64) + " | base64 -d").output;
}

HostKeyFile makeHostKey(const TempDir& dir, const std::string& name, const std::string& type) {
  const std::string path = (dir.path() / name).string();
  testing::shOk("ssh-keygen -q -t " + type + " -N '' -C c -f " + testing::quote(path));
  std::string pub = testing::readFile(path + ".pub");
  pub = pub.substr(0, pub.rfind(' '));
  const std::string b64 = pub.substr(pub.find(' ') + 1);
  std::string fp =
      testing::sh("ssh-keygen -l -E sha256 -f " + testing::quote(path + ".pub")).output;
  fp = fp.substr(fp.find("SHA256:"));
  fp = fp.substr(0, fp.find(' '));
  return {pub, decode(b64), fp};
}

OfferedHostKey offered(const HostKeyFile& k) { return {"", k.blob, ""}; }

class KnownHostsTest : public ::testing::Test {
 protected:
  TempDir tmp_;
  HostKeyFile ed_ = makeHostKey(tmp_, "ed", "ed25519");
  HostKeyFile ec256_ = makeHostKey(tmp_, "ec256", "ecdsa -b 256");
  HostKeyFile ec384_ = makeHostKey(tmp_, "ec384", "ecdsa -b 384");
  HostKeyFile ec521_ = makeHostKey(tmp_, "ec521", "ecdsa -b 521");
  HostKeyFile rsa_ = makeHostKey(tmp_, "rsa", "rsa -b 2048");
};

TEST_F(KnownHostsTest, FingerprintsAndTypesMatchOpenSsh) {
  for (const auto* k : {&ed_, &ec256_, &ec384_, &ec521_, &rsa_}) {
    EXPECT_EQ(sshFingerprint(sha256Raw(k->blob)), k->fingerprint) << k->line;
    EXPECT_EQ(keyTypeOfBlob(k->blob), k->line.substr(0, k->line.find(' ')));
  }
  EXPECT_EQ(knownHostsName("Example.COM", 22), "example.com");
  EXPECT_EQ(knownHostsName("127.0.0.1", 2222), "[127.0.0.1]:2222");
}

TEST_F(KnownHostsTest, PlainPatterns) {
  const std::string kh =
      "# comment\n\n"
      "other.example " +
      ec256_.line +
      "\n"
      "git.example.com,[git.example.com]:2222,10.0.0.1 " +
      ed_.line +
      " c\n"
      "*.wild.example,!bad.wild.example " +
      ec384_.line +
      "\n"
      "[127.0.0.?]:7999 " +
      ec521_.line +
      "\n"
      "rsa.example\t" +
      rsa_.line + "\n";
  EXPECT_TRUE(verifyHostKey(kh, "git.example.com", 22, offered(ed_)).ok());
  EXPECT_TRUE(verifyHostKey(kh, "GIT.example.com", 2222, offered(ed_)).ok());
  EXPECT_TRUE(verifyHostKey(kh, "10.0.0.1", 22, offered(ed_)).ok());
  EXPECT_TRUE(verifyHostKey(kh, "a.wild.example", 22, offered(ec384_)).ok());
  EXPECT_TRUE(verifyHostKey(kh, "127.0.0.5", 7999, offered(ec521_)).ok());
  EXPECT_TRUE(verifyHostKey(kh, "rsa.example", 22, offered(rsa_)).ok());

  // Only the digest (no raw key from libgit2): compared by SHA-256.
  EXPECT_TRUE(verifyHostKey(kh, "git.example.com", 22, {"", "", sha256Raw(ed_.blob)}).ok());

  // The port matters: git.example.com:2200 has no entry.
  const absl::Status unknown = verifyHostKey(kh, "git.example.com", 2200, offered(ed_));
  EXPECT_EQ(unknown.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("[git.example.com]:2200"));
  EXPECT_THAT(std::string(unknown.message()), HasSubstr(ed_.fingerprint));
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("ssh-keyscan -p 2200 git.example.com"));

  // Negation wins over the wildcard.
  EXPECT_EQ(verifyHostKey(kh, "bad.wild.example", 22, offered(ec384_)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(KnownHostsTest, MismatchNamesHostAndOfferedFingerprint) {
  const std::string kh = "[git.example.com]:2222 " + ed_.line + "\n";
  const absl::Status s = verifyHostKey(kh, "git.example.com", 2222, offered(ec256_));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  const std::string m(s.message());
  EXPECT_THAT(m, HasSubstr("[git.example.com]:2222"));
  EXPECT_THAT(m, HasSubstr("ecdsa-sha2-nistp256 key " + ec256_.fingerprint));
  EXPECT_THAT(m, HasSubstr("expected ssh-ed25519 " + ed_.fingerprint));
  EXPECT_THAT(m, HasSubstr("does not match"));
}

TEST_F(KnownHostsTest, HashedEntriesFromSshKeygen) {
  const auto file = tmp_.path() / "known_hosts";
  testing::writeFile(file, "git.example.com " + ed_.line + "\n[127.0.0.1]:2222 " + ec256_.line +
                               "\nplain.example " + rsa_.line + "\n");
  testing::shOk("ssh-keygen -q -H -f " + testing::quote(file.string()));
  const std::string kh = testing::readFile(file);
  ASSERT_THAT(kh, HasSubstr("|1|"));
  ASSERT_THAT(kh, Not(HasSubstr("git.example.com")));
  EXPECT_TRUE(verifyHostKey(kh, "git.example.com", 22, offered(ed_)).ok());
  EXPECT_TRUE(verifyHostKey(kh, "127.0.0.1", 2222, offered(ec256_)).ok());
  EXPECT_TRUE(verifyHostKey(kh, "plain.example", 22, offered(rsa_)).ok());
  EXPECT_EQ(verifyHostKey(kh, "127.0.0.1", 22, offered(ec256_)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(verifyHostKey(kh, "git.example.com", 22, offered(ec256_)).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(KnownHostsTest, RevokedAndCertAuthorityLines) {
  const std::string kh = "@revoked * " + ed_.line + "\n@cert-authority *.example " + ec256_.line +
                         "\ngit.example.com " + ed_.line + "\n";
  const absl::Status s = verifyHostKey(kh, "git.example.com", 22, offered(ed_));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(s.message()), HasSubstr("@revoked"));
  // A CA line does not vouch for a plain key.
  EXPECT_EQ(verifyHostKey(kh, "x.example", 22, offered(ec256_)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(KnownHostsTest, MalformedLinesAreSkipped) {
  const std::string kh =
      "git.example.com\ngit.example.com ssh-ed25519\ngit.example.com "
      "ssh-ed25519 !!!notbase64!!!\n|1|bad|hash ssh-ed25519 AAAA\n" +
      std::string("git.example.com ") + ed_.line + "\n";
  EXPECT_TRUE(verifyHostKey(kh, "git.example.com", 22, offered(ed_)).ok());
}

TEST(SshUrlTest, HostAndPort) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(parseSshUrl("ssh://git@example.com:2222/org/x.git", &host, &port));
  EXPECT_EQ(host, "example.com");
  EXPECT_EQ(port, 2222);
  ASSERT_TRUE(parseSshUrl("ssh://example.com/x.git", &host, &port));
  EXPECT_EQ(port, 22);
  ASSERT_TRUE(parseSshUrl("git+ssh://u@[::1]:2200/x.git", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 2200);
  ASSERT_TRUE(parseSshUrl("git@github.com:org/repo@x.git", &host, &port));
  EXPECT_EQ(host, "github.com");
  EXPECT_EQ(port, 22);
  EXPECT_FALSE(parseSshUrl("https://example.com/x.git", &host, &port));
  EXPECT_FALSE(parseSshUrl("/srv/git/x.git", &host, &port));
  EXPECT_FALSE(parseSshUrl("file:///srv/x.git", &host, &port));
}

TEST(SshKeyTypeTest, PrivateKeyFormats) {
  TempDir tmp;
  struct Case {
    std::string type;
    std::string format;
    std::string passphrase;
    std::string expected;
  };
  for (const Case& c :
       {Case{"ed25519", "", "", "ssh-ed25519"}, Case{"ed25519", "", "secret-pass", "ssh-ed25519"},
        Case{"rsa", "", "", "ssh-rsa"}, Case{"rsa", "PEM", "", "ssh-rsa"},
        Case{"ecdsa", "", "", "ecdsa-sha2-nistp256"}, Case{"ecdsa", "PEM", "", "ecdsa"}}) {
    const auto key = testing::makeSshKey(tmp.path(), c.type + c.format + c.passphrase, c.type,
                                         c.format, c.passphrase);
    EXPECT_EQ(sshKeyType(key.private_key, ""), c.expected) << c.type << " " << c.format;
    EXPECT_EQ(sshKeyType("", key.public_key),
              c.expected == "ecdsa" ? "ecdsa-sha2-nistp256" : c.expected);
  }
}

}  // namespace
}  // namespace tributary::installer::internal
