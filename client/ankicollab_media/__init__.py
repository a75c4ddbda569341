"""AnkiCollab's media client: background upload and fast, verified download into Anki's media
folder. Standard library plus ``requests``; the only module that imports Anki is
``ankicollab_media.anki``.

    from ankicollab_media import MediaClient
    client = MediaClient("https://media.example", token=lambda: backend.media_token())
    report = client.download("deck-id", col.media.dir())
"""

__version__ = "0.1.0"

from .client import MediaClient
from .errors import (
    AuthError,
    BadRequest,
    Cancelled,
    ForbiddenError,
    MediaError,
    NetworkError,
    QuotaExceeded,
    RateLimited,
    ServerError,
)
from .reports import DownloadReport, UploadReport
from .transport import RetryPolicy

__all__ = [
    "AuthError",
    "BadRequest",
    "Cancelled",
    "DownloadReport",
    "ForbiddenError",
    "MediaClient",
    "MediaError",
    "NetworkError",
    "QuotaExceeded",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "UploadReport",
    "__version__",
]
