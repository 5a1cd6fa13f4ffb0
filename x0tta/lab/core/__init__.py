"""The lab's pure parts: topology files into typed records, agent configs as text, ping samples
into outages. No I/O happens in this package (no files, clocks, processes or sockets); the runner
(:mod:`x0tta.lab.runner`) and the in-guest engine (:mod:`x0tta.lab.guest`) do the I/O around it.
"""
