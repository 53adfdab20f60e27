# The public API of guestpool, listed once. Runtime loading is lazy (see
# __init__.py); tests/test_exports.py pins this list.
from ._errors import (
    ApplianceError as ApplianceError,
)
from ._errors import (
    ApplianceTimeout as ApplianceTimeout,
)
from ._errors import (
    FleetError as FleetError,
)
from ._errors import (
    GuestpoolError as GuestpoolError,
)
from ._errors import (
    ImageError as ImageError,
)
from ._errors import (
    InspectorError as InspectorError,
)
from ._errors import (
    LateBindingUnavailable as LateBindingUnavailable,
)
from ._errors import (
    SetupError as SetupError,
)
from .appliance._abc import Appliance as Appliance
from .appliance._abc import Spawn as Spawn
from .appliance._process import WorkerAppliance as WorkerAppliance
from .appliance._protocol import ErrorKind as ErrorKind
from .appliance._sizing import default_pool_size as default_pool_size
from .fleet._model import (
    VM as VM,
)
from .fleet._model import (
    Disk as Disk,
)
from .fleet._model import (
    Fleet as Fleet,
)
from .fleet._model import (
    load_manifest as load_manifest,
)
from .fleet._model import (
    write_manifest as write_manifest,
)
from .fleet._safety import SafetyPolicy as SafetyPolicy
from .fleet._sources import Source as Source
from .fleet._sources import open_source as open_source
from .fleet._sources import safety_policy as safety_policy
from .inspectors._specs import InspectorSpec as InspectorSpec
from .rounds._periodic import run_periodic as run_periodic
from .rounds._plan import Plan as Plan
from .rounds._plan import plan_round as plan_round
from .rounds._pool import Pool as Pool
from .rounds._report import RoundOptions as RoundOptions
from .rounds._report import RoundReport as RoundReport
from .rounds._round import run_round as run_round
from .store._database import Store as Store
from .store._results import InspectResult as InspectResult
from .store._results import Stats as Stats
