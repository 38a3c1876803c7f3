#!/usr/bin/env python3
"""Tributary connector ``http-index``: lists the entries of an HTTP(S) directory index.

Fetches a URL serving either an HTML directory index (``python3 -m http.server``, Apache, nginx
``autoindex``, ...) or a JSON listing (nginx ``autoindex_format json``, Caddy ``browse`` JSON, or a
plain array of names/URLs), and sends one object per linked entry. Standard library only, besides
the Tributary Python SDK. README.md documents the options, the objects and the errors.
"""

from __future__ import annotations

import email.utils
import html.parser
import json
import logging
import posixpath
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from tributary_connector import Connector, DataObject, serve

log = logging.getLogger("http-index")

NAME = "http-index"
USER_AGENT = "tributary-http-index/0.1"
MAX_LISTING_BYTES = 64 << 20  # A listing larger than this is refused, not truncated.
MAX_PAGE_BYTES = 2 << 20  # Half of a Go host's default 4 MiB receive limit.


class SyncError(Exception):
    """A failure with a message for the user (becomes the Sync error)."""


class OptionError(SyncError):
    def __init__(self, message: str):
        super().__init__(f"{NAME}: invalid options: {message}")


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:60] + "…"


@dataclass
class Options:
    url: str
    format: str = "auto"
    recursive: bool = False
    max_depth: int = 10
    directories: bool = True
    head: bool = False
    timeout: float = 30.0
    page_size: int = 500
    headers: Dict[str, str] = field(default_factory=dict)


KNOWN = ["url", "format", "recursive", "max_depth", "directories", "head", "timeout", "page_size",
         "headers"]


def parse_options(text: str) -> Options:
    if not text.strip():
        raw: Any = {}
    else:
        try:
            raw = json.loads(text)
        except ValueError:
            raise OptionError("not valid JSON; the options must be a JSON object such as "
                              '{"url": "https://example.com/files/"}') from None
    if not isinstance(raw, dict):
        raise OptionError(f"expected a JSON object, got {_describe(raw)}")
    for key in raw:
        if key not in KNOWN:
            raise OptionError(f'unknown option "{key}" (known options: {", ".join(KNOWN)})')

    def typed(key: str, check, expected: str, default: Any) -> Any:
        if key not in raw or raw[key] is None:
            return default
        value = raw[key]
        if not check(value):
            raise OptionError(f'"{key}" must be {expected}, got {_describe(value)}')
        return value

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    url = typed("url", lambda v: isinstance(v, str) and v != "", "a non-empty string", None)
    if url is None:
        raise OptionError('"url" is required: the http:// or https:// URL of the index, e.g. '
                          '{"url": "https://example.com/files/"}')
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise OptionError(f'"url" must be an absolute http:// or https:// URL, got {_describe(url)}')
    opts = Options(url=url)
    opts.format = typed("format", lambda v: v in ("auto", "html", "json"),
                        'one of "auto", "html", "json"', "auto")
    opts.recursive = typed("recursive", lambda v: isinstance(v, bool), "true or false", False)
    opts.max_depth = typed("max_depth", lambda v: is_int(v) and 1 <= v <= 100,
                           "an integer from 1 to 100", 10)
    opts.directories = typed("directories", lambda v: isinstance(v, bool), "true or false", True)
    opts.head = typed("head", lambda v: isinstance(v, bool), "true or false", False)
    timeout = typed("timeout",
                    lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                    and 0 < v <= 3600,
                    "a number of seconds greater than 0 and at most 3600", 30.0)
    opts.timeout = float(timeout)
    opts.page_size = typed("page_size", lambda v: is_int(v) and 1 <= v <= 100000,
                           "an integer from 1 to 100000", 500)
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        # Never echo the value: headers usually carry credentials.
        raise OptionError('"headers" must be an object mapping header names to strings')
    for k, v in headers.items():
        if not isinstance(v, str) or not k or any(c in k + v for c in "\r\n"):
            # Never echo header values: they usually carry credentials.
            raise OptionError(f'"headers" must map header names to single-line strings '
                              f'(bad entry: "{k}")')
    opts.headers = dict(headers)
    return opts


# --- URLs -------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")


def normalize_url(url: str) -> str:
    """A canonical form of an absolute URL: lower-case scheme and host, no fragment, no default
    port, and every character that may not appear in a URL percent-encoded (existing %XX kept), so
    that remote ids are ASCII and equal for equal resources."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host
    if parts.port is not None and not ((scheme == "http" and parts.port == 80)
                                       or (scheme == "https" and parts.port == 443)):
        netloc = f"{host}:{parts.port}"
    path = _UNSAFE.sub(lambda m: urllib.parse.quote(m.group(0), safe=""), parts.path or "/")
    query = _UNSAFE.sub(lambda m: urllib.parse.quote(m.group(0), safe=""), parts.query)
    return urllib.parse.urlunsplit((scheme, netloc, path, query, ""))


def entry_name(url: str) -> str:
    """The last path segment, percent-decoded ("a b.txt"; "sub" for ".../sub/")."""
    path = urllib.parse.urlsplit(url).path
    name = posixpath.basename(path.rstrip("/"))
    return urllib.parse.unquote(name, errors="replace") if name else path


def is_under(url: str, base: str) -> bool:
    """True when `url` is strictly inside the directory `base` (same origin, deeper path)."""
    u, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    if (u.scheme, u.netloc) != (b.scheme, b.netloc):
        return False
    base_dir = b.path if b.path.endswith("/") else posixpath.dirname(b.path) + "/"
    return u.path.startswith(base_dir) and u.path != base_dir


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class Response:
    url: str  # After redirects.
    status: int
    headers: Any
    body: bytes


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never sends the user's `headers` (credentials) to another origin."""

    def __init__(self, private_headers: List[str]):
        super().__init__()
        self.private = [name.capitalize() for name in private_headers]

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            old, target = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
            if (old.scheme, old.netloc) != (target.scheme, target.netloc):
                for name in self.private:
                    new.remove_header(name)
        return new


class Fetcher:
    def __init__(self, opts: Options):
        self.opts = opts
        self.requests = 0
        self.opener = urllib.request.build_opener(_RedirectHandler(list(opts.headers)))

    def fetch(self, url: str, method: str = "GET") -> Response:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json, text/html;q=0.9, */*;q=0.5"}
        headers.update(self.opts.headers)
        request = urllib.request.Request(url, method=method, headers=headers)
        self.requests += 1
        shown = url
        try:
            with self.opener.open(request, timeout=self.opts.timeout) as response:
                body = b""
                if method == "GET":
                    body = response.read(MAX_LISTING_BYTES + 1)
                    if len(body) > MAX_LISTING_BYTES:
                        raise SyncError(f"{NAME}: the listing at {shown} is larger than "
                                        f"{MAX_LISTING_BYTES >> 20} MiB; refusing to truncate it")
                return Response(response.geturl(), response.status, response.headers, body)
        except urllib.error.HTTPError as e:
            e.close()
            raise HttpStatusError(method, shown, e.code, e.reason) from None
        except (socket.timeout, TimeoutError):
            raise SyncError(f"{NAME}: {method} {shown} timed out after {self.opts.timeout:g} s "
                            f'(raise "timeout" if the server is slow)') from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise SyncError(f"{NAME}: {method} {shown} timed out after "
                                f'{self.opts.timeout:g} s (raise "timeout" if the server is slow)'
                                ) from None
            if isinstance(reason, ssl.SSLError):
                raise SyncError(f"{NAME}: TLS error for {shown}: {reason}") from None
            raise SyncError(f"{NAME}: cannot reach {shown}: {reason}") from None
        except (ConnectionError, OSError) as e:
            raise SyncError(f"{NAME}: cannot reach {shown}: {e}") from None


class HttpStatusError(SyncError):
    def __init__(self, method: str, url: str, status: int, reason: str):
        self.status = status
        super().__init__(f"{NAME}: {method} {url} returned HTTP {status} {reason}".rstrip())


# --- listing parsers --------------------------------------------------------------------------


@dataclass
class Entry:
    url: str
    is_dir: bool
    metadata: Dict[str, Any]


class _LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: List[str] = []
        self.base: Optional[str] = None

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        values = dict(attrs)
        if tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]
        elif tag == "a" and values.get("href") is not None:
            self.links.append(values["href"] or "")


def _charset(headers: Any) -> str:
    charset = headers.get_content_charset() if headers is not None else None
    return charset or "utf-8"


def parse_html(body: bytes, page_url: str, headers: Any) -> List[Entry]:
    parser = _LinkParser()
    parser.feed(body.decode(_charset(headers), errors="replace"))
    parser.close()
    base = urllib.parse.urljoin(page_url, parser.base) if parser.base else page_url
    entries: List[Entry] = []
    seen = set()
    for href in parser.links:
        href = href.strip()
        if not href or href.startswith(("#", "?", "mailto:", "javascript:", "data:")):
            continue  # Fragments, sort links (Apache's ?C=N;O=D), non-resources.
        url = normalize_url(urllib.parse.urljoin(base, href))
        if not is_under(url, normalize_url(page_url)) or url in seen:
            continue  # Parent directory, other sites, absolute links elsewhere, duplicates.
        seen.add(url)
        entries.append(Entry(url, urllib.parse.urlsplit(url).path.endswith("/"), {}))
    return entries


_JSON_NAME_KEYS = ("url", "href", "path", "name")
_JSON_SIZE_KEYS = ("size", "length", "bytes")
_JSON_TIME_KEYS = ("mtime", "mod_time", "last_modified", "modified", "lastModified")
_JSON_TYPE_KEYS = ("content_type", "contentType", "mime", "mime_type")


def parse_json(body: bytes, page_url: str) -> List[Entry]:
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SyncError(f"{NAME}: {page_url} is not valid JSON: {e}") from None
    if isinstance(doc, dict):
        for key in ("entries", "items", "files", "children", "data"):
            if isinstance(doc.get(key), list):
                doc = doc[key]
                break
    if not isinstance(doc, list):
        raise SyncError(f"{NAME}: the JSON at {page_url} is not a listing: expected an array of "
                        'names or of objects with "name"/"url"/"href"/"path", or an object with '
                        'an "entries"/"items"/"files" array')
    base = page_url if page_url.endswith("/") else page_url.rsplit("/", 1)[0] + "/"
    entries: List[Entry] = []
    seen = set()
    for index, item in enumerate(doc):
        metadata: Dict[str, Any] = {}
        is_dir = False
        if isinstance(item, str):
            link = item
        elif isinstance(item, dict):
            link = next((item[k] for k in _JSON_NAME_KEYS if isinstance(item.get(k), str)), None)
            if not link:
                raise SyncError(f"{NAME}: entry {index} of the JSON listing at {page_url} has no "
                                f'"name", "url", "href" or "path": {_describe(item)}')
            kind = item.get("type")
            is_dir = (item.get("is_dir") is True or kind in ("directory", "dir")
                      or link.endswith("/"))
            if is_dir and not link.endswith("/") and "://" not in link:
                link += "/"
            for keys, out in ((_JSON_SIZE_KEYS, "size"), (_JSON_TIME_KEYS, "last_modified"),
                              (_JSON_TYPE_KEYS, "content_type")):
                value = next((item[k] for k in keys if k in item and item[k] is not None), None)
                if value is not None and not is_dir:
                    metadata[out] = value
                elif value is not None and out == "last_modified":
                    metadata[out] = value
        else:
            raise SyncError(f"{NAME}: entry {index} of the JSON listing at {page_url} is neither a "
                            f"string nor an object: {_describe(item)}")
        if "://" not in link and not link.startswith("/"):
            link = urllib.parse.quote(link, safe="/%:@!$&'()*+,;=~")
        url = normalize_url(urllib.parse.urljoin(base, link))
        if url in seen:
            continue
        seen.add(url)
        entries.append(Entry(url, is_dir or url.endswith("/"), metadata))
    return entries


def _http_date(value: Optional[str]) -> Optional[str]:
    """An HTTP date as RFC 3339 UTC ("2026-01-02T03:04:05Z"), or the text as is if unparsable."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return value
    if parsed is None:
        return value
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(parsed.timestamp()))


# --- the connector ----------------------------------------------------------------------------


class Pager:
    def __init__(self, callback, page_size: int):
        self.callback = callback
        self.page_size = page_size
        self.buffer: List[DataObject] = []
        self.bytes = 0
        self.pages = 0
        self.objects = 0

    def add(self, obj: DataObject) -> None:
        size = len(obj.remote_id) + len(obj.resource_name) + len(obj.uri) + len(obj.metadata) + 16
        if self.buffer and self.bytes + size > MAX_PAGE_BYTES:
            self.flush()
        self.buffer.append(obj)
        self.bytes += size
        if len(self.buffer) >= self.page_size:
            self.flush()

    def flush(self) -> None:
        if self.callback.is_cancelled():
            raise SyncError(f"{NAME}: the host cancelled the sync")
        if not self.buffer:
            return
        self.callback.upsert(self.buffer)  # Raises UpsertError: let it fail the Sync.
        self.pages += 1
        self.objects += len(self.buffer)
        self.buffer = []
        self.bytes = 0


class HttpIndexConnector(Connector):
    def sync(self, options: str, callback) -> Dict[str, Any]:
        opts = parse_options(options)
        started = time.monotonic()
        fetcher = Fetcher(opts)
        pager = Pager(callback, opts.page_size)
        counts = {"files": 0, "directories": 0, "listings": 0}
        root = normalize_url(opts.url)
        log.info("listing", extra={"url": root, "recursive": opts.recursive})
        for entry in self._walk(fetcher, root, opts, counts, callback):
            if entry.is_dir:
                counts["directories"] += 1
                if not opts.directories:
                    continue
            else:
                counts["files"] += 1
            metadata = {"type": "directory" if entry.is_dir else "file"}
            metadata.update(entry.metadata)
            if opts.head and not entry.is_dir:
                metadata.update(self._head(fetcher, entry.url))
            if "last_modified" in metadata and isinstance(metadata["last_modified"], str):
                metadata["last_modified"] = _http_date(metadata["last_modified"]) \
                    if not re.match(r"^\d{4}-\d{2}-\d{2}T", metadata["last_modified"]) \
                    else metadata["last_modified"]
            pager.add(DataObject(remote_id=entry.url, resource_name=entry_name(entry.url),
                                 uri=entry.url, metadata=metadata))
        pager.flush()
        summary = {"url": root, "pages": pager.pages, "objects": pager.objects,
                   "files": counts["files"], "directories": counts["directories"],
                   "listings_fetched": counts["listings"], "requests": fetcher.requests,
                   "seconds": round(time.monotonic() - started, 3)}
        log.info("listed", extra={"objects": pager.objects, "pages": pager.pages})
        return summary

    def _walk(self, fetcher: Fetcher, root: str, opts: Options, counts: Dict[str, int],
              callback) -> Iterator[Entry]:
        # Depth-first over directory listings; `visited` holds directory URLs only.
        visited = {root}
        stack: List[Tuple[str, int]] = [(root, 1)]
        while stack:
            if callback.is_cancelled():
                raise SyncError(f"{NAME}: the host cancelled the sync")
            url, depth = stack.pop()
            entries = self._listing(fetcher, url, opts, is_root=(url == root))
            counts["listings"] += 1
            subdirs = []
            for entry in entries:
                yield entry
                if (opts.recursive and entry.is_dir and depth < opts.max_depth
                        and entry.url not in visited and is_under(entry.url, root)):
                    visited.add(entry.url)
                    subdirs.append((entry.url, depth + 1))
            stack.extend(reversed(subdirs))

    def _listing(self, fetcher: Fetcher, url: str, opts: Options, is_root: bool) -> List[Entry]:
        try:
            response = fetcher.fetch(url)
        except HttpStatusError as e:
            if is_root:
                raise
            # A listed sub-directory that cannot be listed: a partial listing would make the store
            # delete what it holds, so the sync fails.
            raise SyncError(f"{e} while listing a sub-directory; the listing would be incomplete, "
                            "so the sync fails") from None
        final = normalize_url(response.url)
        content_type = (response.headers.get_content_type() or "").lower()
        kind = opts.format
        if kind == "auto":
            if content_type == "application/json" or content_type.endswith("+json"):
                kind = "json"
            elif content_type in ("text/html", "application/xhtml+xml"):
                kind = "html"
            else:
                stripped = response.body.lstrip()[:1]
                kind = "json" if stripped in (b"[", b"{") else "html"
        if kind == "json":
            return parse_json(response.body, final)
        return parse_html(response.body, final, response.headers)

    def _head(self, fetcher: Fetcher, url: str) -> Dict[str, Any]:
        try:
            response = fetcher.fetch(url, method="HEAD")
        except HttpStatusError as e:
            # The entry is listed but HEAD is refused (405/501) or it disappeared: keep the entry,
            # record the status. Network failures and timeouts still fail the sync.
            return {"head_status": e.status}
        out: Dict[str, Any] = {}
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit():
            out["size"] = int(length)
        modified = _http_date(response.headers.get("Last-Modified"))
        if modified:
            out["last_modified"] = modified
        if response.headers.get("Content-Type"):
            out["content_type"] = response.headers.get("Content-Type")
        if response.headers.get("ETag"):
            out["etag"] = response.headers.get("ETag")
        return out


if __name__ == "__main__":
    serve(HttpIndexConnector())
