/* A shared library that is not ksmauto, installed by the test under the
 * library's own file name: a bare name in LD_PRELOAD that the loader finds
 * here (LD_LIBRARY_PATH) loads this, not the library. */
int ksmauto_decoy(void) { return 1; }
