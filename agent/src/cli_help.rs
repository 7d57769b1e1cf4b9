//! Part of the `ferry` binary (not the library): the usage lines and the
//! "Examples" section of each subcommand's `--help`.

/// `ferry send`'s usage: what it needs, from flags or a config file.
pub const SEND_USAGE: &str = "ferry send --source DIR (--host HOST | --store DIR) [OPTIONS]
       ferry send --config FILE [OPTIONS]";

/// `ferry receive`'s usage.
pub const RECEIVE_USAGE: &str = "ferry receive --store DIR [OPTIONS]
       ferry receive --config FILE [OPTIONS]";

pub const ID: &str = "\
Examples:
  Print this machine's device id (created on first use):
    ferry id
  The id of the identity kept in another state directory (e.g. a service's):
    ferry id --state /var/lib/ferry";

pub const RECEIVE: &str = "\
Examples:
  Store into /srv/ferry; senders that know the secret pair on first contact:
    ferry receive --store /srv/ferry --pairing-secret-file /etc/ferry/secret
  Admit one sender by its device id (`ferry id` on the sender):
    ferry receive --store /srv/ferry --allow ID
  Keep old versions for 90 days, at most 100 GiB per sender:
    ferry receive --store /srv/ferry --keep-for 90d --quota 100GiB
  Everything from a config file:
    ferry receive -c /etc/ferry/receiver.toml";

pub const SEND: &str = "\
Examples:
  Back up a folder once into a local store:
    ferry send --source ~/Documents --store /mnt/backup/ferry
  Send to a receiver every 15 minutes (the secret is needed on first contact):
    ferry send --source ~/Documents --host nas.local --every 15m \\
      --pairing-secret-file ~/.ferry-secret
  Send changes as they happen (and a full scan every hour):
    ferry send --source ~/Documents --host nas.local --watch
  One run that logs what it does (-q: errors only, no summary):
    ferry send -v --source ~/Documents --host nas.local
  Leave out build output, logs and cache directories (also .ferryignore files):
    ferry send --source ~/code --store /mnt/backup/ferry \\
      --exclude target/ --exclude '*.log' --exclude-caches
  Encrypted on the receiver (make the key first: `ferry key new`):
    ferry send --source ~/Documents --host nas.local \\
      --protect encrypted --key-file ~/folder.key
  Write-only: this machine can add versions but never read them back:
    ferry send --source ~/Documents --host nas.local \\
      --protect write-only --key-file ~/folder.pub
  A sender configured in a file:
    ferry send -c /etc/ferry/sender.toml";

pub const HISTORY: &str = "\
Examples:
  This sender's own runs:
    ferry history
  The receiver's record of this sender's runs of one folder:
    ferry history --host nas.local --folder Documents
  Every sender's runs, on the receiver's machine:
    ferry history --store /srv/ferry
  The same as JSON, one object per line:
    ferry history --store /srv/ferry --json";

pub const VERSIONS: &str = "\
Examples:
  Every stored version of one file:
    ferry versions --host nas.local --folder Documents notes/todo.txt
  The same for a sender configured in a file, as JSON:
    ferry versions -c /etc/ferry/sender.toml --json notes/todo.txt
  Of an encrypted or write-only folder: its key file opens the real sizes
  and times (the passphrase is asked, or read from --passphrase-file):
    ferry versions --host nas.local --folder Documents \\
      --key-file ~/folder.key notes/todo.txt";

pub const LS: &str = "\
Examples:
  The folder's top directory as the receiver holds it now:
    ferry ls --host nas.local --folder Documents
  One directory as of run 42 (see `ferry history --host`), as JSON:
    ferry ls --host nas.local --folder Documents --run 42 --json notes
  A directory as it was yesterday, from a local store:
    ferry ls --store /mnt/backup --at 1day photos/2026";

pub const RESTORE: &str = "\
Examples:
  The latest state of the whole folder into ./restored:
    ferry restore --host nas.local --folder Documents --to ./restored
  One subtree as it was 3 hours ago:
    ferry restore --host nas.local --folder Documents --at 3h --to ./restored notes
  As of run 42 (see `ferry history --host`), replacing what exists:
    ferry restore --host nas.local --folder Documents --run 42 --to ~/Documents --overwrite
  From the sender's local copies, without the receiver:
    ferry restore --from-copies ~/.ferry-copies --to ./restored";

pub const VERIFY: &str = "\
Examples:
  Re-hash every stored version against the catalog (exit 1 on any problem):
    ferry verify --store /srv/ferry
  The report as JSON:
    ferry verify --store /srv/ferry --json > verify.json";

pub const SENDERS: &str = "\
Examples:
  Every sender of this receiver, with bytes stored and who is connected:
    ferry senders list --store /srv/ferry
  Shut a lost laptop out (its files and history stay):
    ferry senders revoke laptop --store /srv/ferry
  Let it back in:
    ferry senders allow laptop --store /srv/ferry
  Stop accepting new senders, even with the pairing secret:
    ferry senders pairing off --store /srv/ferry";

pub const KEY: &str = "\
Examples:
  A new folder key (asks the passphrase twice):
    ferry key new --out ~/folder.key
  Its public half, for a write-only sender:
    ferry key public ~/folder.key --out folder.pub
  The key id of either file:
    ferry key id folder.pub";

pub const KEY_NEW: &str = "\
Examples:
  A new folder key (asks the passphrase twice; keep a copy of the file):
    ferry key new --out ~/folder.key
  For a script, with the passphrase in a file:
    ferry key new --out folder.key --passphrase-file /run/secrets/ferry-pass";

pub const KEY_PUBLIC: &str = "\
Examples:
  Write the public half for a write-only sender:
    ferry key public ~/folder.key --out folder.pub
  Print it:
    ferry key public ~/folder.key";

pub const KEY_ID: &str = "\
Examples:
  The key id of a key file or a public file:
    ferry key id ~/folder.key";
