// Azure AI Search with keys disabled (disableLocalAuth: Azure RBAC only). The learner builds the indexes
// (Search Service Contributor creates them, Search Index Data Contributor uploads documents); the app
// only queries them (Search Index Data Reader).

@description('Name of the service (globally unique, lower case)')
param name string

@description('Region')
param location string

@description('Tags')
param tags object = {}

@description('basic is billed per hour whether used or not; free is one per subscription and small')
@allowed([
  'free'
  'basic'
  'standard'
])
param sku string = 'basic'

@description('Principal id of the app\'s managed identity')
param appPrincipalId string

@description('Object id of the signed-in learner; empty: no learner role')
param userPrincipalId string = ''

@description('User for a person, ServicePrincipal for a CI identity')
param userPrincipalType string = 'User'

var roles = loadJsonContent('../roles.json')

resource search 'Microsoft.Search/searchServices@2023-11-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
  }
  properties: {
    replicaCount: 1
    partitionCount: 1
    hostingMode: 'default'
    publicNetworkAccess: 'enabled'
    disableLocalAuth: true
  }
}

resource appIndexDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(search.id, appPrincipalId, roles.searchIndexDataReader.id)
  scope: search
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.searchIndexDataReader.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userIndexDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(search.id, userPrincipalId, roles.searchIndexDataContributor.id)
  scope: search
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.searchIndexDataContributor.id)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userServiceContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(search.id, userPrincipalId, roles.searchServiceContributor.id)
  scope: search
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.searchServiceContributor.id)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

output name string = search.name
output endpoint string = 'https://${search.name}.search.windows.net'
