"""The alerts every router benchmark sends, in the two sizes the README states.

`small`: a diffusion with no subject to speak of (~165 bytes on the wire), the router's fixed cost
per message. `realistic`: a diffusion about a wanted person as agencies send them (~2 kB): a subject
with identity, aliases and identity documents, the offence, a description, purpose, legal basis and
grading; no biometrics, so nothing is redacted and the router delivers the original bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from liaison.sdk.builders import alert, envelope, subject

Builder = Callable[[str, str, str], dict[str, Any]]
"""(sender, recipient, case id) -> an Alert record."""

_DESCRIPTION = (
    "Subject is wanted for questioning in connection with a series of armed robberies of cash-in-"
    "transit vehicles on the A1 and A4 motorways between March and June. He is believed to travel "
    "by car between the Netherlands, Belgium and the north of France, using rented vehicles booked "
    "under the aliases listed, and to stay in short-term rentals near border crossings. He was last "
    "seen in a dark grey estate car with foreign plates. Known associates are the subjects of the "
    "related diffusions in this case. He may be armed with a handgun and has used violence against "
    "security staff; approach with caution. Please report any sighting, hotel registration, vehicle "
    "rental or border crossing to the originator, with the time, place and any vehicle used, and do "
    "not alert the subject. Photographs and fingerprints are available from the originator on "
    "request under the applicable agreement. Background: the subject was convicted in 2016 of "
    "aggravated theft and released in 2021; he has family in Turin and Marseille and has used "
    "prepaid phone cards bought in Belgium. Financial investigators are tracing cash deposits made "
    "in his associates' names. A European Arrest Warrant is being prepared by the investigating "
    "judge; this diffusion will be updated with its reference once it is issued."
)


def small(sender: str, recipient: str, case_id: str) -> dict[str, Any]:
    return alert(envelope(sender, to=[recipient], case_id=case_id, tlp="AMBER", handling=["H0"]),
                 kind="DIFFUSION", colour="BLUE")


def realistic(sender: str, recipient: str, case_id: str) -> dict[str, Any]:
    env = envelope(sender, to=[recipient], case_id=case_id, tlp="AMBER", handling=["H1"],
                   categories=["PERSONAL", "DOCUMENT", "VEHICLE"],
                   purpose="Locate a suspect of armed robbery for questioning",
                   legal_basis="Directive (EU) 2023/977, Art. 7 (information on own initiative)",
                   trace_id=f"00-{case_id.encode().hex()[:32].ljust(32, '0')}-00f067aa0ba902b7-01")
    person = {"family_name": "DUBOIS-MARCHETTI", "given_names": "Jean-Baptiste Antoine",
              "date_of_birth": 3652, "nationalities": ["FR", "IT"], "sex": "M",
              "aliases": ["Jean MARCHETTI", "Giovanni MARCHETTI", "JB DUBOIS", "Antoine LEFEVRE"]}
    identifiers = [{"scheme": "PASSPORT", "value": "19FR83645", "issuer": "FR"},
                   {"scheme": "ID_CARD", "value": "CA34X9QT2", "issuer": "IT"},
                   {"scheme": "DRIVING_LICENCE", "value": "100389200451", "issuer": "FR"},
                   {"scheme": "PLATE", "value": "GX-482-PZ", "issuer": "FR"}]
    subj = subject("adult male, about 1.80 m, short dark hair, scar above the left eyebrow; may be armed",
                   kind="PERSON", person=person, identifiers=identifiers)
    return alert(env, kind="DIFFUSION", colour="BLUE", action="LOCATE", subj=subj,
                 reference=f"{sender}/2024/ROB/{case_id}",
                 offence="Armed robbery (cash-in-transit), participation in a criminal organisation",
                 description=_DESCRIPTION,
                 grading={"source": "B", "information": "I2"})


SIZES: dict[str, Builder] = {"small": small, "realistic": realistic}
"""The benchmark's record sizes, by the name the results use."""
