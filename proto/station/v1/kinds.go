package stationv1

// Event kinds: the strings of Event.kind, one per EventKind value (station.proto documents
// each). The store and the workflow write these constants; nothing else names a kind.
const (
	KindUnitCreated            = "unit.created"
	KindUnitUpdated            = "unit.updated"
	KindStepBegun              = "step.begun"
	KindStepEnded              = "step.ended"
	KindEKBound                = "ek.bound"
	KindEKReleased             = "ek.released"
	KindCertRecorded           = "cert.recorded"
	KindReworkAuthorized       = "rework.authorized"
	KindWorkOrderCreated       = "work_order.created"
	KindWorkOrderClosed        = "work_order.closed"
	KindHoldDecided            = "hold.decided"
	KindUnitDone               = "unit.done"
	KindUnitFailed             = "unit.failed"
	KindUnitWaiting            = "unit.waiting"
	KindUnitAlreadyProvisioned = "unit.already_provisioned"
	KindUnitAborted            = "unit.aborted"
	KindEnrollAnswerLost       = "enroll.answer_lost"
	KindCertDuplicate          = "cert.duplicate"
	KindCertRefused            = "cert.refused"
	KindCertStatus             = "cert.status"
)

// eventKinds maps every EventKind to its Event.kind string.
var eventKinds = map[EventKind]string{
	EventKind_EVENT_KIND_UNIT_CREATED:             KindUnitCreated,
	EventKind_EVENT_KIND_UNIT_UPDATED:             KindUnitUpdated,
	EventKind_EVENT_KIND_STEP_BEGUN:               KindStepBegun,
	EventKind_EVENT_KIND_STEP_ENDED:               KindStepEnded,
	EventKind_EVENT_KIND_EK_BOUND:                 KindEKBound,
	EventKind_EVENT_KIND_CERT_RECORDED:            KindCertRecorded,
	EventKind_EVENT_KIND_REWORK_AUTHORIZED:        KindReworkAuthorized,
	EventKind_EVENT_KIND_WORK_ORDER_CREATED:       KindWorkOrderCreated,
	EventKind_EVENT_KIND_WORK_ORDER_CLOSED:        KindWorkOrderClosed,
	EventKind_EVENT_KIND_HOLD_DECIDED:             KindHoldDecided,
	EventKind_EVENT_KIND_UNIT_DONE:                KindUnitDone,
	EventKind_EVENT_KIND_UNIT_FAILED:              KindUnitFailed,
	EventKind_EVENT_KIND_UNIT_WAITING:             KindUnitWaiting,
	EventKind_EVENT_KIND_UNIT_ALREADY_PROVISIONED: KindUnitAlreadyProvisioned,
	EventKind_EVENT_KIND_UNIT_ABORTED:             KindUnitAborted,
	EventKind_EVENT_KIND_ENROLL_ANSWER_LOST:       KindEnrollAnswerLost,
	EventKind_EVENT_KIND_CERT_DUPLICATE:           KindCertDuplicate,
	EventKind_EVENT_KIND_CERT_REFUSED:             KindCertRefused,
	EventKind_EVENT_KIND_CERT_STATUS:              KindCertStatus,
	EventKind_EVENT_KIND_EK_RELEASED:              KindEKReleased,
}

// Kind returns the Event.kind string of k, "" for EVENT_KIND_UNSPECIFIED or an unknown value.
func (k EventKind) Kind() string { return eventKinds[k] }

// ParseEventKind returns the EventKind of an Event.kind string, EVENT_KIND_UNSPECIFIED when it
// names none.
func ParseEventKind(kind string) EventKind {
	for k, s := range eventKinds {
		if s == kind {
			return k
		}
	}
	return EventKind_EVENT_KIND_UNSPECIFIED
}
