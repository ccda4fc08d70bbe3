"""``text_extract`` whose import takes ``IMPORT_S`` seconds, longer than its step's timeout: a
cold converter import in a new child (libraries, models), which must not count against the step."""

import time
from dataclasses import replace

from converters import text_extract

IMPORT_S = 2.0
time.sleep(IMPORT_S)

SPEC = replace(text_extract.SPEC, version=f"{text_extract.SPEC.version}+slow-import", timeout_s=1.0)
convert = text_extract.convert
