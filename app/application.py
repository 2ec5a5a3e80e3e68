"""FusinkFlask: Flask, with what it works out anew for every request worked out once.

Flask binds the URL map to every request's environ (host, script name, path and
query decoded) and runs Werkzeug's matcher on its path, a tenth of the
instructions a status read takes. For a rule without arguments the outcome depends
only on the method and the path, so it is remembered; anything else (arguments,
redirects, 404, 405, `url_for`) goes to the MapAdapter Flask builds, as before.

Flask also asks, for the view and every hook of every request, whether it is a
coroutine function (five calls into `inspect` each time); a function's answer does
not change, so each plain one is remembered.

fusink keeps no sessions (an API, and operator pages without log-in): Flask's
cookie sessions made an empty session object for every request; NoSessions hands
out one read-only empty session (any write to it raises) and saves nothing.
"""

from flask import Flask
from flask.sessions import NullSession, SessionInterface
from werkzeug.routing import MapAdapter, Rule

# At most this many (method, path) pairs, and as many plain functions: paths that
# differ only in leading slashes match the same rule, so a client could otherwise
# grow the memo without end.
MAX_REMEMBERED = 256


class NoSessions(SessionInterface):
    """The same empty, read-only session for every request; nothing to save."""

    _session = NullSession()

    def open_session(self, app, request):
        return self._session

    def save_session(self, app, session, response):
        pass


class FusinkFlask(Flask):
    """Flask whose requests look up their rule in a memo before binding the URL map,
    whose plain views and hooks are known as such after their first call, and
    which keeps no sessions."""

    session_interface = NoSessions()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.remembered_rules: dict[tuple[str, str], Rule] = {}
        self.plain_functions: set = set()  # views and hooks known not to be coroutines

    def create_url_adapter(self, request):
        if (
            request is None
            # Host checks and host-dependent matching need the bound adapter.
            or self.config["TRUSTED_HOSTS"] is not None
            or self.url_map.host_matching
            or self.subdomain_matching
            or "HTTP_UPGRADE" in request.environ  # a WebSocket matches other rules
        ):
            return super().create_url_adapter(request)
        return RememberingAdapter(self, request)

    def ensure_sync(self, func):
        try:
            if func in self.plain_functions:
                return func
        except TypeError:  # an unhashable callable: asked every time
            return super().ensure_sync(func)
        synced = super().ensure_sync(func)
        if synced is func and len(self.plain_functions) < MAX_REMEMBERED:
            self.plain_functions.add(func)
        return synced


class RememberingAdapter:
    """A request's URL adapter: the remembered rule, else Flask's MapAdapter, bound
    on first use."""

    __slots__ = ("app", "request", "_bound")

    def __init__(self, app: FusinkFlask, request):
        self.app, self.request, self._bound = app, request, None

    @property
    def bound(self) -> MapAdapter:
        if self._bound is None:
            self._bound = Flask.create_url_adapter(self.app, self.request)
        return self._bound

    def match(
        self, path_info=None, method=None, return_rule=False, query_args=None, websocket=None
    ):
        if path_info is not None or method is not None or not return_rule or websocket:
            return self.bound.match(path_info, method, return_rule, query_args, websocket)
        # How Flask matches a request: its own method and path, the rule returned.
        environ = self.request.environ
        key = (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
        remembered = self.app.remembered_rules
        rule = remembered.get(key)
        if rule is not None:
            return rule, {}
        rule, arguments = self.bound.match(return_rule=True, query_args=query_args)
        if not arguments and len(remembered) < MAX_REMEMBERED:
            remembered[key] = rule
        return rule, arguments

    def __getattr__(self, name):
        return getattr(self.bound, name)  # build(), and anything else a MapAdapter has
