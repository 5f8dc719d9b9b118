package peer

// Write is one key's new state, as a watch delivers it: a value, or a
// delete or purge marker (Deleted) whose Value is its body.
type Write struct {
	Key      string
	Value    []byte
	Revision uint64
	Deleted  bool
}

// Batch is what Watch hands the agent. A Snapshot batch is the whole bucket,
// delete and purge markers included, and replaces everything the receiver
// knew; any other batch is updates in order.
type Batch struct {
	Snapshot bool
	Entries  []Write
	// Revision is, for a snapshot, the highest revision the watch had
	// delivered when the snapshot ended (markers included).
	Revision uint64
}

// Repair is what the mesh controller asks of the bucket to heal this host's
// claim. The zero Repair asks nothing.
type Repair struct {
	// Bucket: the bucket is gone; create it again (where permitted) with
	// the agent's settings, then write the record back.
	Bucket bool
	// Reclaim: no record is at our key; write ours with Create, so a real
	// race for the prefix still has exactly one winner.
	Reclaim bool
	// Defend: a value that is not our record sits at our key at this
	// revision; put ours back with Update on it (compare-and-set).
	Defend uint64
	// Release: records of this host's key under other prefixes (its own
	// older ones where it moved, or copies); delete each with
	// compare-and-set, once its claim is held, with a command signed by
	// this host's key up to the record's seq: a plain delete at another
	// host's claim could pass for that host's eviction. They route nothing
	// (a newer record of the key supersedes them): this only frees the
	// prefix.
	Release []Stale
	// WriteBack: signed records of other hosts the bucket lost; each is
	// written back with Create where this host may (§5).
	WriteBack []Lost
	// Revoke: revocations this agent saw that the bucket no longer has (it
	// was deleted and made again, or restored from an older backup), with
	// the values they had; each is written back with Create where this host
	// may. A host that may not says so, once per request: the agents that
	// saw them still refuse those keys, but an agent that starts now would
	// not.
	Revoke []Lost
}

// Lost is a signed record to write back where the bucket has none.
type Lost struct {
	Key   string
	Value []byte
}

// Stale is a record of this host's key to delete if it is still at
// Revision; Seq is the record's (0 for an unsigned one).
type Stale struct {
	Key      string
	Revision uint64
	Seq      uint64
}

// Empty reports whether r asks nothing.
func (r Repair) Empty() bool {
	return !r.Bucket && !r.Reclaim && r.Defend == 0 && len(r.Release) == 0 && len(r.Revoke) == 0 && len(r.WriteBack) == 0
}

// Keep carries into r what a newer request must not drop: re-making the
// bucket, and revocations and records to write back.
func (r Repair) Keep(older Repair) Repair {
	r.Bucket = r.Bucket || older.Bucket
	if len(r.Revoke) == 0 {
		r.Revoke = older.Revoke
	}
	if len(r.WriteBack) == 0 {
		r.WriteBack = older.WriteBack
	}
	return r
}
