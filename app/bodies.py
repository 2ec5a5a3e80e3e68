"""The request class: malformed JSON is named, MAX_CONTENT_LENGTH holds for chunked
bodies (and is read without Flask's proxy), and a body the worker has read in full is
taken as it is."""

from flask import Request, current_app
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wsgi import LimitedStream

from .errors import ApiError
from .jsonio import MalformedJson

# The environ key under which app/worker.py hands over a body it has read in full,
# within MAX_CONTENT_LENGTH.
WHOLE_BODY = "fusink.whole_body"


class MaxLengthStream(LimitedStream):
    """A body of unknown length, read up to MAX_CONTENT_LENGTH; one byte more is a 413.

    werkzeug's own stream stops quietly at the limit, so a chunked body past it
    arrived cut short and was answered as malformed JSON.
    """

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted and self._stream.read(1):
            raise RequestEntityTooLarge()
        return data


class FusinkRequest(Request):
    """Flask's request, with the changes above."""

    def __init__(self, environ, *args, **kwargs):
        super().__init__(environ, *args, **kwargs)
        body = environ.get(WHOLE_BODY)
        if body is not None:
            # Where get_data() keeps what it read: no stream to wrap and read again.
            self._cached_data = body

    @property
    def max_content_length(self) -> int | None:
        # Flask's own goes through the current_app proxy twice (a truth test, then
        # `config`; about a microsecond each), and a request with a body asks twice.
        if self._max_content_length is not None:
            return self._max_content_length
        try:
            return current_app._get_current_object().config["MAX_CONTENT_LENGTH"]
        except RuntimeError:  # no app context: Werkzeug's default
            return WerkzeugRequest.max_content_length

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value

    @cached_property
    def stream(self):
        limit = self.max_content_length
        if (
            self.content_length is None
            and limit is not None
            and self.environ.get("wsgi.input_terminated")
        ):
            return MaxLengthStream(self.environ["wsgi.input"], limit, is_max=True)
        return super().stream

    def on_json_loading_failed(self, e):
        if isinstance(e, MalformedJson):
            raise ApiError(400, str(e))
        return super().on_json_loading_failed(e)
