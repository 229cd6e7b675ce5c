/* ckptdir.h -- atomic checkpoint directories with a SHA-256 manifest.
 *
 * A checkpoint is a flat directory of regular files plus manifest.json:
 *   {"format": "she-checkpoint", "version": 1,
 *    "files": {"model.safetensors": {"sha256": "<64 hex>", "bytes": 123}, ...}}
 * Writers fill a fresh temporary directory next to the final one and commit it; readers
 * verify it before trusting it.  A reader therefore sees either the old checkpoint or the
 * new one, complete, never a mix (after a crash the old one, or, in the short window of the
 * rename-aside fallback below, "<final>.old-<pid>-<n>").
 *
 * Not handled: subdirectories, symlinks and special files (commit refuses them); concurrent
 * writers of the same final directory (the caller serialises, e.g. only rank 0 saves). */
#ifndef SHE_CKPTDIR_H
#define SHE_CKPTDIR_H

#include <stddef.h>

#include "error.h"

/* Creates a fresh, empty directory "<final_dir>.tmp-<pid>-<n>" next to final_dir (trailing
 * slashes of final_dir ignored) and writes its path to tmp_dir.  The caller writes its files
 * there, then calls she_ckptdir_commit, or she_ckptdir_abort on failure.  Returns
 * SHE_ERR_INVALID if tmp_dir_size is too small, SHE_ERR_IO if mkdir fails. */
she_err_t she_ckptdir_begin(const char *final_dir, char *tmp_dir, size_t tmp_dir_size,
                            char *errstr, size_t errstr_size);

/* Writes tmp_dir/manifest.json covering every regular file in tmp_dir (sorted by name),
 * fsyncs the files, the manifest and the directory, then replaces final_dir with tmp_dir:
 * a plain rename if final_dir does not exist, else an atomic exchange (renameat2
 * RENAME_EXCHANGE) or, where the file system lacks it, renaming final_dir aside first; the
 * old checkpoint is removed afterwards.  On success tmp_dir no longer exists.  On failure
 * final_dir is left as it was and tmp_dir stays for she_ckptdir_abort.  Returns
 * SHE_ERR_INVALID if tmp_dir holds something other than regular files, SHE_ERR_IO otherwise. */
she_err_t she_ckptdir_commit(const char *tmp_dir, const char *final_dir, char *errstr,
                             size_t errstr_size);

/* Removes a temporary directory made by she_ckptdir_begin and everything in it; NULL or ""
 * does nothing.  Passing any other directory is a bug (asserted: the name holds ".tmp-"). */
void she_ckptdir_abort(const char *tmp_dir);

/* Checks dir/manifest.json: every listed file exists as a regular file with the listed size
 * and SHA-256, and dir holds no file the manifest does not list.  Returns SHE_OK, or
 * SHE_ERR_FORMAT naming the file and the mismatch (a missing or malformed manifest included),
 * SHE_ERR_UNSUPPORTED for a manifest version other than 1, SHE_ERR_NOT_FOUND if dir does not
 * exist, SHE_ERR_IO on read errors. */
she_err_t she_ckptdir_verify(const char *dir, char *errstr, size_t errstr_size);

#endif
