"""Database room: typed tables, sessions and migrations. The only place that knows table layouts."""
from db.base import Base
from db.models import (ApiToken, AuditEvent, Job, ModelVersion, Prediction, Scan,
                       TrainingRun, User)

__all__ = ["Base", "ApiToken", "AuditEvent", "Job", "ModelVersion", "Prediction", "Scan",
           "TrainingRun", "User"]
